"""plan_letter and split_addresses: pure functions, built from plain data (no database)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cobranca.addresses import split_addresses
from cobranca.config import Layout
from cobranca.models import Address, Customer, CustomerTitles, Disposition, Title
from cobranca.plan import (
    SKIP_BELOW_MINIMUM,
    SKIP_CADENCE,
    SKIP_NO_VALID_TITLES,
    cadence_window_start,
    plan_letter,
)

AS_OF = date(2026, 12, 4)


def customer(raw_emails: str = "um@cliente.com.br") -> Customer:
    return Customer(
        code="000001",
        store="01",
        name="Cliente Um Ltda",
        short_name="Um",
        tax_id="11222333000181",
        person_type="J",
        raw_emails=raw_emails,
        address=Address("Rua Principal, 1", "Centro", "Campinas", "SP", "13010000"),
        blocked=False,
    )


def title(number: str = "1", balance: str = "100.00", abatements: str = "0.00") -> Title:
    real_due = AS_OF - timedelta(days=5)
    return Title(
        branch="01",
        prefix="NF",
        number=number,
        installment="",
        type="NF",
        customer_code="000001",
        customer_store="01",
        issue_date=AS_OF - timedelta(days=60),
        due_date=real_due,
        real_due_date=real_due,
        value=Decimal(balance),
        balance=Decimal(balance),
        abatements=Decimal(abatements),
        situation="0",
        days_from_due=5,
        days_late=5,
    )


def group(*titles: Title, emails: str = "um@cliente.com.br", **kwargs: Any) -> CustomerTitles:
    return CustomerTitles(customer=customer(emails), titles=titles, **kwargs)


def layout(cadence_days: int = 15, min_balance: str = "0.01") -> Layout:
    return Layout.model_validate(
        {
            "name": "primeiro-aviso",
            "schedule": "0 9 * * mon-fri",
            "template": "primeiro-aviso",
            "subject": "Aviso",
            "selection": {"days": {"min": 1, "max": 15}, "min_balance": min_balance},
            "cadence_days": cadence_days,
        }
    )


# --- cadence --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days_ago", "disposition"),
    [
        (0, Disposition.SKIP),
        (1, Disposition.SKIP),
        (14, Disposition.SKIP),
        (15, Disposition.SEND),  # exactly cadence_days ago
        (16, Disposition.SEND),
        (None, Disposition.SEND),  # never sent
    ],
)
def test_cadence(days_ago: int | None, disposition: Disposition) -> None:
    last_sent = None if days_ago is None else AS_OF - timedelta(days=days_ago)
    planned = plan_letter(group(title()), layout(cadence_days=15), AS_OF, last_sent)
    assert planned.disposition is disposition
    assert planned.reason == (SKIP_CADENCE if disposition is Disposition.SKIP else "")


@pytest.mark.parametrize("cadence_days", [1, 3, 7, 15])
def test_cadence_window_start_agrees_with_plan(cadence_days: int) -> None:
    the_layout = layout(cadence_days=cadence_days)
    start = cadence_window_start(the_layout, AS_OF)
    for days_ago in range(cadence_days + 3):
        last_sent = AS_OF - timedelta(days=days_ago)
        planned = plan_letter(group(title()), the_layout, AS_OF, last_sent)
        blocked = planned.reason == SKIP_CADENCE
        assert blocked is (last_sent >= start), (days_ago, start)
    assert start == AS_OF - timedelta(days=cadence_days - 1)


def test_within_cadence_no_paper_letter_either() -> None:
    planned = plan_letter(
        group(title(), emails="ver com Adriana"), layout(), AS_OF, AS_OF - timedelta(days=2)
    )
    assert (planned.disposition, planned.reason) == (Disposition.SKIP, SKIP_CADENCE)


# --- recipients -----------------------------------------------------------------------------


def test_send_with_recipients_split_deduplicated_lower_case() -> None:
    planned = plan_letter(
        group(title(), emails="a@x.com.br; B@x.com.br ,a@x.com.br"), layout(), AS_OF, None
    )
    assert planned.disposition is Disposition.SEND
    assert planned.reason == ""
    assert planned.recipients == ("a@x.com.br", "b@x.com.br")
    assert planned.invalid_emails == ()
    assert planned.layout == "primeiro-aviso"
    assert planned.as_of == AS_OF
    assert planned.customer.key == "000001/01"


def test_send_uses_the_valid_addresses_and_reports_the_invalid_ones() -> None:
    planned = plan_letter(
        group(title(), emails="ver com Adriana; fin@x.com.br"), layout(), AS_OF, None
    )
    assert planned.disposition is Disposition.SEND
    assert planned.recipients == ("fin@x.com.br",)
    assert planned.invalid_emails == ("ver com Adriana",)


def test_print_when_no_valid_email_lists_the_invalid_entries() -> None:
    planned = plan_letter(
        group(title(), emails="ver com Adriana; financeiro@; x@y"), layout(), AS_OF, None
    )
    assert planned.disposition is Disposition.PRINT
    assert planned.recipients == ()
    assert planned.invalid_emails == ("ver com Adriana", "financeiro@", "x@y")
    for entry in planned.invalid_emails:
        assert entry in planned.reason
    assert planned.titles == (title(),)


@pytest.mark.parametrize("emails", ["", " ; , "])
def test_print_when_no_email_at_all(emails: str) -> None:
    planned = plan_letter(group(title(), emails=emails), layout(), AS_OF, None)
    assert planned.disposition is Disposition.PRINT
    assert planned.reason == "no e-mail address"
    assert planned.recipients == () and planned.invalid_emails == ()


# --- balances -------------------------------------------------------------------------------


def test_skip_below_minimum_balance() -> None:
    planned = plan_letter(
        group(title("1", "49.99"), title("2", "10.00")),
        layout(min_balance="50.00"),
        AS_OF,
        None,
    )
    assert (planned.disposition, planned.reason) == (Disposition.SKIP, SKIP_BELOW_MINIMUM)
    assert planned.titles == ()


def test_minimum_applies_to_net_balance_and_keeps_titles_at_the_minimum() -> None:
    at_minimum = title("1", "50.00")
    net_below = title("2", "100.00", abatements="60.00")  # gross passes, net 40 does not
    above = title("3", "80.00", abatements="0.01")
    planned = plan_letter(
        group(at_minimum, net_below, above), layout(min_balance="50.00"), AS_OF, None
    )
    assert planned.disposition is Disposition.SEND
    assert [t.number for t in planned.titles] == ["1", "3"]
    assert planned.total == Decimal("129.99")
    assert type(planned.total) is Decimal


def test_fully_abated_titulo_is_dropped_even_with_zero_minimum() -> None:
    planned = plan_letter(
        group(title("1", "30.00", abatements="30.00"), title("2", "10.00", abatements="12.00")),
        layout(min_balance="0"),
        AS_OF,
        None,
    )
    assert (planned.disposition, planned.reason) == (Disposition.SKIP, SKIP_BELOW_MINIMUM)


def test_skip_no_valid_titles_when_only_rejected() -> None:
    rejected = (("01|NF|2||NF|000001|01", "not a Protheus date (YYYYMMDD): '2025133 '"),)
    planned = plan_letter(group(rejected=rejected), layout(), AS_OF, None)
    assert (planned.disposition, planned.reason) == (Disposition.SKIP, SKIP_NO_VALID_TITLES)
    assert planned.titles == ()


def test_rejected_titulos_do_not_stop_the_valid_ones() -> None:
    rejected = (("01|NF|2||NF|000001|01", "bad date"),)
    planned = plan_letter(group(title(), rejected=rejected), layout(), AS_OF, None)
    assert planned.disposition is Disposition.SEND
    assert planned.titles == (title(),)


def test_overdue_and_coming_due_split_on_days_from_due() -> None:
    late = title("1")
    on_due_day = replace(title("2"), days_from_due=0, days_late=0)
    planned = plan_letter(group(late, on_due_day), layout(), AS_OF, None)
    assert planned.overdue == (late,)
    assert planned.coming_due == (on_due_day,)


# --- split_addresses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "valid", "invalid"),
    [
        (None, (), ()),
        ("", (), ()),
        ("ver com Adriana", (), ("ver com Adriana",)),
        ("a@x.com b@y.com", ("a@x.com", "b@y.com"), ()),
        ("a@x.com\tb@y.com", ("a@x.com", "b@y.com"), ()),
        ("a@x.com.br; B@x.com.br ,a@x.com.br", ("a@x.com.br", "b@x.com.br"), ()),
        ("A@X.COM.BR;a@x.com.br", ("a@x.com.br",), ()),
        ("<fin@x.com.br>", ("fin@x.com.br",), ()),
        ("fin@x.com.br;ver com Adriana", ("fin@x.com.br",), ("ver com Adriana",)),
        ("fin@x.com.br   ver   com Adriana", (), ("fin@x.com.br ver com Adriana",)),
        (
            "fin@@x.com; .a@x.com; a..b@x.com; a@x",
            (),
            ("fin@@x.com", ".a@x.com", "a..b@x.com", "a@x"),
        ),
        ("  um@cliente.com.br  ;;  ", ("um@cliente.com.br",), ()),
    ],
)
def test_split_addresses(raw: str | None, valid: tuple[str, ...], invalid: tuple[str, ...]) -> None:
    assert split_addresses(raw) == (valid, invalid)


@pytest.mark.parametrize(
    "raw",
    [
        "x@y.com\r\nBcc: z@evil.example",
        "x@y.com\nBcc:z@evil.example",
        "x@y.com\rBcc: z@evil.example",
        "x@y.com\r\nbcc: z@evil.example; w@y.com",
        "Bcc: z@evil.example",
        "x@y.com%0d%0aBcc:z@evil.example",
        "x@y.com\r\n\r\nBcc: z@evil.example",
        '"x@y.com\r\nBcc: z"@evil.example',
        "x@y.com\u2028Bcc: z@evil.example",
        "x@y.com\x00Bcc: z@evil.example",
    ],
)
def test_no_address_ever_carries_a_header(raw: str) -> None:
    valid, invalid = split_addresses(raw)
    for address in valid:
        assert "\r" not in address and "\n" not in address
        assert "bcc" not in address.lower()
        assert ":" not in address and " " not in address
    for entry in invalid:
        assert "\r" not in entry and "\n" not in entry


def test_header_injection_keeps_the_honest_addresses_out_of_trouble() -> None:
    valid, invalid = split_addresses("x@y.com\r\nBcc: z@evil.example; w@y.com")
    assert valid == ("w@y.com",)
    assert invalid == ("x@y.com Bcc: z@evil.example",)
