"""CNPJ/CPF check digits: the Receita Federal's published examples, numeric and alphanumeric."""

from __future__ import annotations

import pytest

from cobranca.taxid import cnpj_check_digits, cpf_check_digits, valid_cnpj, valid_cpf


@pytest.mark.parametrize(
    "cnpj",
    ["11444777000161", "11222333000181", "12ABC34501DE35"],  # last: Receita's example
)
def test_valid_cnpjs(cnpj: str) -> None:
    assert valid_cnpj(cnpj)
    assert cnpj_check_digits(cnpj[:12]) == cnpj[12:]


@pytest.mark.parametrize(
    "cnpj",
    ["11444777000162", "12ABC34501DE36", "00000000000000", "1144477700016", "12abc34501de35"],
)
def test_invalid_cnpjs(cnpj: str) -> None:
    assert not valid_cnpj(cnpj)


def test_cpf() -> None:
    assert valid_cpf("52998224725") and cpf_check_digits("529982247") == "25"
    assert not valid_cpf("52998224726") and not valid_cpf("11111111111")
