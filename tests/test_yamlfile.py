"""Strict YAML loader: the YAML 1.1 traps, positions for error messages, and load errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from cobranca.yamlfile import YamlDocument, YamlError, load_yaml


def write(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> Any:
    return load_yaml(write(tmp_path, text)).data


# --- the four YAML 1.1 traps (libraries.md) ---------------------------------------------------


def test_times_stay_strings_not_base60(tmp_path: Path) -> None:
    # PyYAML's YAML 1.1 reads 8:30 as 510 and 18:30 as 1110 (08:30 happens to escape).
    assert yaml.safe_load("[8:30, 18:30]") == [510, 1110]
    data = load(tmp_path, "times: [08:30, 8:30, 18:30, 1:20:30]\n")
    assert data == {"times": ["08:30", "8:30", "18:30", "1:20:30"]}


def test_yes_no_on_off_are_strings(tmp_path: Path) -> None:
    assert yaml.safe_load("[no, off]") == [False, False]
    data = load(tmp_path, "v: [no, off, yes, on, y, n, NO, Off, Yes, ON, Y, N]\n")
    assert data == {"v": ["no", "off", "yes", "on", "y", "n", "NO", "Off", "Yes", "ON", "Y", "N"]}


def test_only_true_false_are_booleans(tmp_path: Path) -> None:
    data = load(tmp_path, "v: [true, True, TRUE, false, False, FALSE]\n")
    assert data == {"v": [True, True, True, False, False, False]}
    assert all(type(item) is bool for item in data["v"])


def test_leading_zero_numbers_stay_strings(tmp_path: Path) -> None:
    assert yaml.safe_load("010") == 8  # YAML 1.1 octal
    data = load(tmp_path, "cliente: 000123\nfilial: 01\nv: 010\nzero: 0\nneg: -01\n")
    assert data == {"cliente": "000123", "filial": "01", "v": "010", "zero": 0, "neg": "-01"}


def test_duplicate_key_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    assert yaml.safe_load("a: 1\na: 2\n") == {"a": 2}  # PyYAML: last one silently wins
    path = write(tmp_path, "layout:\n  dias: 10\n  nome: x\n  dias: 20\n")
    with pytest.raises(YamlError) as info:
        load_yaml(path)
    err = info.value
    assert err.line == 4
    assert err.column == 3
    assert "duplicate key 'dias' (first at line 2)" in err.message
    assert str(err).startswith(f"{path}:4:3: ")


def test_duplicate_key_quoted_and_plain(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match="duplicate key 'a'"):
        load_yaml(write(tmp_path, 'a: 1\n"a": 2\n'))


# --- other scalar rules --------------------------------------------------------------------------


def test_numbers(tmp_path: Path) -> None:
    data = load(tmp_path, "v: [1.5, -3, .5, +7, -0.25, 2.5e3, 0.0, 12345678901234567890]\n")
    assert data == {"v": [1.5, -3, 0.5, 7, -0.25, 2500.0, 0.0, 12345678901234567890]}
    assert [type(x) for x in data["v"]] == [float, int, float, int, float, float, float, int]


def test_non_decimal_and_odd_numbers_stay_strings(tmp_path: Path) -> None:
    data = load(tmp_path, "v: [0o10, 0x1F, 0b101, 1_000, 1e3, 01.5, '1,5', 12E34]\n")
    assert data == {"v": ["0o10", "0x1F", "0b101", "1_000", "1e3", "01.5", "1,5", "12E34"]}


def test_nulls_and_dates(tmp_path: Path) -> None:
    data = load(tmp_path, "a: ~\nb: null\nc:\nd: NULL\ne: 2025-03-05\nf: 'null'\n")
    assert data == {"a": None, "b": None, "c": None, "d": None, "e": "2025-03-05", "f": "null"}


def test_global_safe_loader_untouched(tmp_path: Path) -> None:
    load(tmp_path, "a: 1\n")
    assert yaml.safe_load("[no, 8:30]") == [False, 510]


def test_explicit_str_tag_and_unsupported_tags(tmp_path: Path) -> None:
    assert load(tmp_path, "a: !!str 5\n") == {"a": "5"}
    with pytest.raises(YamlError, match=r"unsupported tag '!!binary'"):
        load_yaml(write(tmp_path, "a: !!binary aGk=\n"))
    with pytest.raises(YamlError, match=r"unsupported tag '!!python/object"):
        load_yaml(write(tmp_path, "a: !!python/object:os.system x\n"))


def test_non_string_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match=r"mapping key '1' must be text") as info:
        load_yaml(write(tmp_path, "a: 1\n1: x\n"))
    assert (info.value.line, info.value.column) == (2, 1)


# --- anchors, aliases, merge keys ---------------------------------------------------------------


MERGE = """\
base: &smtp
  host: smtp.example.com
  port: 587
layouts:
  - name: a
    <<: *smtp
    port: 25
  - name: b
    smtp: *smtp
"""


def test_aliases_and_merge_keys(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, MERGE))
    assert doc.data["layouts"][0] == {"name": "a", "host": "smtp.example.com", "port": 25}
    assert doc.data["layouts"][1]["smtp"] == {"host": "smtp.example.com", "port": 587}
    assert doc.locate(("layouts", 0, "port")) == (7, 11)  # the explicit override
    assert doc.locate(("layouts", 0, "host")) == (2, 9)  # written in the anchor
    assert doc.locate(("layouts", 1, "smtp")) == (9, 11)  # where the alias is used


def test_recursive_alias_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match="contains itself"):
        load_yaml(write(tmp_path, "a: &x [1, *x]\n"))


def test_alias_bomb_is_stopped(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(YamlError, match="too many values"):
        load_yaml(write(tmp_path, "\n".join(lines) + "\n"))


# --- positions -----------------------------------------------------------------------------------


CONFIG = """\
# cobranca
timezone: America/Sao_Paulo
layouts:
  - name: primeiro
    selection:
      days: {min: 1, max: 5}
  - name: segundo
    selection:
      days:
        min: 6
        max: 30
  - name: terceiro
    schedule: "0 8 * * 1-5"
    selection:
      days:
        min: 31
        max: 60
    emails:
      - financeiro@example.com
      - cobranca@example.com
"""


def test_locate_nested_mapping_value(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, CONFIG))
    assert doc.locate(("layouts", 1, "selection", "days", "max")) == (11, 14)
    assert doc.locate(("layouts", 0, "selection", "days", "max")) == (6, 27)
    assert doc.locate(("timezone",)) == (2, 11)


def test_locate_third_item_of_list_of_mappings(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, CONFIG))
    assert doc.locate(("layouts", 2)) == (12, 5)
    assert doc.locate(("layouts", 2, "selection", "days", "min")) == (16, 14)
    assert doc.locate(("layouts", 2, "emails", 1)) == (20, 9)
    assert doc.where(("layouts", 2, "schedule")) == f"{doc.path}:13:15"


def test_locate_block_value_points_at_its_key(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, CONFIG))
    assert doc.locate(("layouts", 1, "selection")) == (8, 5)
    assert doc.locate(("layouts",)) == (3, 1)


def test_locate_missing_key_gives_closest_parent(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, CONFIG))
    # missing "templates" in the 2nd layout: the layout mapping itself
    assert doc.locate(("layouts", 1, "templates")) == (7, 5)
    # missing "max" under days: the "days" key
    assert doc.locate(("layouts", 1, "selection", "days", "nope", "deeper")) == (9, 7)
    # missing top-level key: the document root
    assert doc.locate(("smtp",)) == (2, 1)
    assert doc.locate(("layouts", 9)) == (3, 1)


def test_positions_are_not_in_data(tmp_path: Path) -> None:
    doc = load_yaml(write(tmp_path, CONFIG))
    assert doc.data["layouts"][0] == {
        "name": "primeiro",
        "selection": {"days": {"min": 1, "max": 5}},
    }
    assert type(doc.data["layouts"][0]) is dict


def test_document_without_positions() -> None:
    doc = YamlDocument(path=Path("x.yaml"), data={"a": 1})
    assert doc.locate(("a",)) is None
    assert doc.where(("a",)) == "x.yaml"


# --- load errors ---------------------------------------------------------------------------------


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\nb:\n  c: 2\n d: 3\n", name="cobranca.yaml")
    with pytest.raises(YamlError) as info:
        load_yaml(path)
    assert info.value.line == 4
    assert str(info.value).startswith(f"{path}:4:")
    assert "cobranca.yaml:4:" in str(info.value)


def test_tab_indentation_is_a_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match=r":2:1: found character '\\t'"):
        load_yaml(write(tmp_path, "a:\n\t- 1\n"))


@pytest.mark.parametrize("text", ["", "\n\n", "# só comentários\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(YamlError) as info:
        load_yaml(path)
    assert info.value.message == "empty file"
    assert str(info.value) == f"{path}: empty file"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\nnome: Jo\xe3o\n".encode("latin-1"))
    with pytest.raises(YamlError) as info:
        load_yaml(path)
    assert "not valid UTF-8" in info.value.message
    assert (info.value.line, info.value.column) == (2, 9)
    assert str(info.value).startswith(f"{path}:2:9: ")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffnome: João\n".encode())
    assert load_yaml(path).data == {"nome": "João"}


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(YamlError, match="file not found") as info:
        load_yaml(path)
    assert info.value.path == path
    assert info.value.line is None


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match="directory"):
        load_yaml(tmp_path)


def test_control_character(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match=r":2:6: unacceptable character #x0001"):
        load_yaml(write(tmp_path, 'a: 1\nb: "x\x01"\n'))


def test_multiple_documents_rejected(tmp_path: Path) -> None:
    with pytest.raises(YamlError, match=r":2:1: .*single document"):
        load_yaml(write(tmp_path, "a: 1\n---\nb: 2\n"))


def test_error_pickles(tmp_path: Path) -> None:
    err = YamlError(tmp_path / "c.yaml", "boom", 3, 4)
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) == f"{tmp_path / 'c.yaml'}:3:4: boom"
