"""load_config: the shipped example, every mistake finance can make, and where the file is found.

Configs here are literal YAML with known line numbers (see BASE), because the point of every
message is to name the line to fix: each test asserts the exact ``file:LINE:`` it expects.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from cobranca import config as config_module
from cobranca.config import CONFIG_ENV, Config, ConfigError, find_config_path, load_config
from conftest import REPO, TEMPLATES

SHIPPED = REPO / "config" / "cobranca.yaml"

# Line numbers matter: tests edit one line of this text and assert the line in the message.
BASE = """\
timezone: America/Sao_Paulo
templates_dir: @TEMPLATES@
source:
  url: sqlite:///protheus.db
  company: "01"
history:
  url: sqlite:///history.db
delivery:
  from_address: cobranca@credora.example.com.br
  from_name: Financeiro Credora
creditor:
  name: Credora Indústria Ltda
  tax_id: "11.444.777/0001-61"
  address: Avenida Paulista, 1000
  city: São Paulo
  state: SP
layouts:
  - name: primeiro-aviso
    schedule: "0 9 * * mon-fri"
    template: primeiro-aviso
    subject: "Aviso – {{ creditor.name }}"
    selection:
      days: {min: 1, max: 15}
    cadence_days: 15
  - name: segundo-aviso
    schedule: "0 9 * * mon-fri"
    template: segundo-aviso
    subject: "Segundo aviso – {{ creditor.name }}"
    selection:
      days: {min: 16, max: 45}
      min_balance: 10.00
    cadence_days: 15
""".replace("@TEMPLATES@", str(TEMPLATES))


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line containing needle (guards the literal numbers below)."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def variant(*edits: tuple[str, str]) -> str:
    """BASE with each (old, new) replaced; old must occur exactly once."""
    text = BASE
    for old, new in edits:
        assert text.count(old) == 1, f"{old!r} must occur once in the base config"
        text = text.replace(old, new)
    return text


def write(tmp_path: Path, text: str, name: str = "cobranca.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert problems, "ConfigError without problems"
    assert str(info.value) == "\n".join(problems)
    return problems


def only_problem(path: Path) -> str:
    problems = problems_of(path)
    assert len(problems) == 1, problems
    return problems[0]


def assert_one_problem(tmp_path: Path, edit: tuple[str, str], line: int, *says: str) -> None:
    """BASE with one edit has exactly one problem, at that line, saying each of ``says``."""
    path = write(tmp_path, variant(edit))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:{line}:"), problem
    for text in says:
        assert text in problem, (text, problem)


def test_base_config_is_valid_and_its_line_numbers_are_the_ones_tests_use(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, BASE))
    assert [layout.name for layout in config.layouts] == ["primeiro-aviso", "segundo-aviso"]
    for needle, line in [
        ("timezone:", 1),
        ("  url: sqlite:///protheus.db", 4),
        ('  company: "01"', 5),
        ("from_address", 9),
        ("tax_id", 13),
        ("name: segundo-aviso", 25),
        ("days: {min: 16, max: 45}", 30),
        ("min_balance", 31),
    ]:
        assert line_of(BASE, needle) == line
    assert BASE.splitlines()[31] == "    cadence_days: 15"  # line 32: layouts[1].cadence_days


# --- the shipped example ---------------------------------------------------------------------


def test_shipped_config_loads_with_paths_relative_to_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on where the daemon starts
    config = load_config(SHIPPED)

    assert isinstance(config, Config)
    assert [layout.name for layout in config.layouts] == [
        "lembrete-vencimento",
        "primeiro-aviso",
        "segundo-aviso",
        "aviso-final",
    ]
    assert config.path == SHIPPED.resolve()
    assert config.digest == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert config.timezone == "America/Sao_Paulo"
    assert config.templates_dir == TEMPLATES
    var = REPO / "var"
    assert config.source.url == f"sqlite:///{var / 'demo-protheus.db'}"
    assert config.source.sqlite_file == var / "demo-protheus.db"
    assert config.history.url == f"sqlite:///{var / 'history.db'}"
    assert config.delivery.transport == "outbox"
    assert config.delivery.outbox.directory == var / "outbox"
    assert str(tmp_path) not in config.source.url + config.history.url
    assert config.source.company == "01"
    assert config.creditor.tax_id == "11444777000161"  # punctuation removed

    for layout in config.layouts:  # numbers as written, not YAML 1.1 / float surprises
        assert isinstance(layout.selection.min_balance, Decimal)
        assert layout.selection.min_balance == layout.selection.min_balance.quantize(
            Decimal("0.01")
        )
        assert all(isinstance(s, str) for s in layout.selection.situations)
    assert config.where(("layouts", 3, "schedule")).startswith(f"{SHIPPED.resolve()}:")


def test_config_path_given_relative_to_the_cwd_still_resolves_against_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO / "daemon")
    config = load_config(Path("../config/cobranca.yaml"))
    assert config.templates_dir == TEMPLATES
    assert config.delivery.outbox.directory == REPO / "var" / "outbox"
    assert config.source.url == f"sqlite:///{REPO / 'var' / 'demo-protheus.db'}"


def test_every_relative_path_resolves_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = variant(
        (f"templates_dir: {TEMPLATES}", "templates_dir: ../modelos"),
        ("url: sqlite:///protheus.db", "url: sqlite:///dados/protheus.db\n  password_file: senha"),
        ("url: sqlite:///history.db", 'url: "sqlite:///:memory:"'),
        ("  from_name: Financeiro Credora", "  outbox:\n    directory: saida"),
    )
    path = write(tmp_path / "etc", text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path)
    etc = (tmp_path / "etc").resolve()
    assert config.templates_dir == tmp_path.resolve() / "modelos"
    assert config.source.url == f"sqlite:///{etc / 'dados' / 'protheus.db'}"
    assert config.source.password_file == etc / "senha"
    assert config.history.url == "sqlite:///:memory:"
    assert config.delivery.outbox.directory == etc / "saida"


def test_default_outbox_and_history_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = variant(("history:\n  url: sqlite:///history.db\n", ""))
    path = write(tmp_path / "conf", text)
    monkeypatch.chdir(REPO)
    config = load_config(path)
    assert config.delivery.outbox.directory == tmp_path.resolve() / "var" / "outbox"
    assert config.history.url == f"sqlite:///{tmp_path.resolve() / 'var' / 'history.db'}"


# --- one mistake, one message naming file:line and the dotted key ------------------------------


def test_unknown_key_typo_suggests_the_right_key(tmp_path: Path) -> None:
    text = variant(("      min_balance: 10.00\n    cadence_days: 15",
                    "      min_balance: 10.00\n    cadense_days: 15"))  # fmt: skip
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:32:")
    assert "layouts[1].cadense_days" in problem
    assert "unknown key" in problem
    assert "did you mean 'cadence_days'" in problem


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, variant(("  city: São Paulo", "  prioridade: alta")))
    problem = next(p for p in problems_of(path) if "prioridade" in p)
    assert problem.startswith(f"{path}:15:")
    assert "creditor.prioridade: unknown key" in problem
    assert "allowed keys here:" in problem and "tax_id" in problem


def test_wrong_type_names_line_key_and_value(tmp_path: Path) -> None:
    text = variant(("      min_balance: 10.00\n    cadence_days: 15",
                    "      min_balance: 10.00\n    cadence_days: sete"))  # fmt: skip
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:32:")
    assert "layouts[1].cadence_days" in problem
    assert "whole number" in problem
    assert "'sete'" in problem


def test_missing_required_key_points_at_its_layout(tmp_path: Path) -> None:
    path = write(tmp_path, variant(("    template: segundo-aviso\n", "")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:25:")  # the layout's "- name: segundo-aviso" line
    assert "layouts[1].template: required key is missing" in problem


def test_missing_required_top_level_section(tmp_path: Path) -> None:
    text = variant(("delivery:\n  from_address: cobranca@credora.example.com.br\n"
                    "  from_name: Financeiro Credora\n", ""))  # fmt: skip
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:1:")
    assert "delivery: required key is missing" in problem


def test_bad_cron_hour_names_line_and_field(tmp_path: Path) -> None:
    lines = BASE.splitlines()
    assert lines[25] == '    schedule: "0 9 * * mon-fri"'
    lines[25] = '    schedule: "0 25 * * *"'
    path = write(tmp_path, "\n".join(lines) + "\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:26:")
    assert "layouts[1].schedule" in problem
    assert "hour" in problem and "'25'" in problem and "0-23" in problem


def test_cron_with_day_of_month_and_day_of_week_is_refused(tmp_path: Path) -> None:
    lines = BASE.splitlines()
    assert lines[18] == '    schedule: "0 9 * * mon-fri"'
    lines[18] = '    schedule: "0 9 1 * mon"'
    path = write(tmp_path, "\n".join(lines) + "\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:19:")
    assert "layouts[0].schedule" in problem
    assert "day-of-month" in problem and "day-of-week" in problem
    assert "both restricted" in problem


def test_unknown_time_zone(tmp_path: Path) -> None:
    path = write(tmp_path, variant(("timezone: America/Sao_Paulo", "timezone: America/Sao_Paolo")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:1:")
    assert "timezone: unknown time zone 'America/Sao_Paolo'" in problem


def test_duplicate_layout_names(tmp_path: Path) -> None:
    path = write(tmp_path, variant(("  - name: segundo-aviso", "  - name: primeiro-aviso")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:25:")
    assert "layouts[1].name" in problem
    assert "duplicate layout name 'primeiro-aviso'" in problem
    assert "layouts[0]" in problem


def test_duplicate_yaml_key_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, variant(('  company: "01"', "  url: sqlite:///outro.db")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:5:")
    assert "duplicate key 'url'" in problem
    assert "line 4" in problem


def test_yaml_syntax_error_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, variant(("  city: São Paulo", "  city: [São Paulo")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:")
    line = int(problem.split(":")[1])
    assert 15 <= line <= 16


def test_a_list_at_the_top_is_not_a_config(tmp_path: Path) -> None:
    path = write(tmp_path, "- timezone: America/Sao_Paulo\n")
    assert "must be a mapping" in only_problem(path)


def test_missing_file(tmp_path: Path) -> None:
    problem = only_problem(tmp_path / "nao-existe.yaml")
    assert str(tmp_path / "nao-existe.yaml") in problem and "not found" in problem


# --- YAML 1.1 traps ----------------------------------------------------------------------------


def test_leading_zero_codes_stay_text(tmp_path: Path) -> None:
    text = variant(
        ('  company: "01"', "  company: 01"),
        ("      days: {min: 1, max: 15}",
         "      days: {min: 1, max: 15}\n      branches: [01, 02]\n"
         "      customers: {include: [000123, 000456/01]}"),
    )  # fmt: skip
    config = load_config(write(tmp_path, text))
    assert config.source.company == "01"
    selection = config.layouts[0].selection
    assert selection.branches == ("01", "02")
    assert selection.customers.include == ("000123", "000456/01")


def test_company_written_as_a_number_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, variant(('  company: "01"', "  company: 1")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:5:")
    assert "source.company" in problem


@pytest.mark.parametrize(
    ("after", "inserted", "line", "key"),
    [
        ("      days: {min: 16, max: 45}", "      skip_blocked: no", 31,
         "layouts[1].selection.skip_blocked"),
        ("    template: segundo-aviso", "    enabled: off", 28, "layouts[1].enabled"),
        ('  company: "01"', "  customers_shared: n", 6, "source.customers_shared"),
    ],
)  # fmt: skip
def test_yes_no_on_off_are_not_booleans(
    tmp_path: Path, after: str, inserted: str, line: int, key: str
) -> None:
    path = write(tmp_path, variant((after, f"{after}\n{inserted}")))
    problem = only_problem(path)  # not silently False
    assert problem.startswith(f"{path}:{line}:")
    assert key in problem
    assert "true or false" in problem.lower() or "bool" in problem.lower()


def test_true_false_are_booleans(tmp_path: Path) -> None:
    text = variant(
        ("      days: {min: 16, max: 45}",
         "      days: {min: 16, max: 45}\n      skip_blocked: false"),
        ("    template: segundo-aviso", "    template: segundo-aviso\n    enabled: False"),
    )  # fmt: skip
    config = load_config(write(tmp_path, text))
    assert config.layouts[1].selection.skip_blocked is False
    assert config.layouts[1].enabled is False
    assert config.layouts[0].selection.skip_blocked is True


def test_sexagesimal_time_is_not_a_number(tmp_path: Path) -> None:
    template = "    template: segundo-aviso"
    text = variant((template, f"{template}\n    description: 8:30"))
    config = load_config(write(tmp_path, text))
    assert config.layouts[1].description == "8:30"

    text = variant(("      min_balance: 10.00\n    cadence_days: 15",
                    "      min_balance: 10.00\n    cadence_days: 8:30"))  # fmt: skip
    path = write(tmp_path, text, "bad.yaml")
    problem = only_problem(path)  # not cadence_days = 510
    assert problem.startswith(f"{path}:32:")
    assert "layouts[1].cadence_days" in problem and "'8:30'" in problem


# --- secrets -----------------------------------------------------------------------------------


def test_password_in_database_url_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, variant(("sqlite:///protheus.db", "postgresql://u:secret@h/db")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:4:")
    assert "source.url" in problem
    assert "password_env" in problem and "password_file" in problem


@pytest.mark.parametrize(
    ("old", "url"),
    [
        ("sqlite:///protheus.db", "postgresql://u:secret@h/db"),
        ("sqlite:///history.db", "postgresql+psycopg://cobranca:secret@db.local/historico"),
    ],
)
def test_password_in_database_url_is_never_echoed(tmp_path: Path, old: str, url: str) -> None:
    path = write(tmp_path, variant((old, url)))
    problem = only_problem(path)
    assert ".url: the URL contains a password" in problem
    assert "secret" not in problem


def test_database_url_with_bad_port_is_a_config_error_without_the_password(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, variant(("sqlite:///protheus.db", "postgresql://u:secret@h:porta/db")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:4:")
    assert "source.url" in problem and "port" in problem
    assert "secret" not in problem


def test_password_env_and_password_file_together(tmp_path: Path) -> None:
    text = variant(
        ('  company: "01"', '  company: "01"\n  password_env: PG_SENHA\n  password_file: senha')
    )
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:3:")  # the "source:" line
    assert "source: give either password_env or password_file, not both" in problem


def test_password_is_read_at_use_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://cobranca@db.local/protheus"
    text = variant(("sqlite:///protheus.db", f"{url}\n  password_env: PG_SENHA"))
    config = load_config(write(tmp_path, text))
    monkeypatch.delenv("PG_SENHA", raising=False)
    with pytest.raises(ConfigError, match="PG_SENHA is not set"):
        config.source.engine_url()
    monkeypatch.setenv("PG_SENHA", "s3nh@")
    assert config.source.engine_url().password == "s3nh@"
    assert "s3nh@" not in config.source.display_url


def test_smtp_transport_needs_an_smtp_section(tmp_path: Path) -> None:
    text = variant(("  from_name: Financeiro Credora", "  transport: smtp"))
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:8:")
    assert "delivery: transport is smtp: add an smtp section" in problem


def test_smtp_username_needs_a_password_source(tmp_path: Path) -> None:
    text = variant(("  from_name: Financeiro Credora",
                    "  transport: smtp\n  smtp:\n    host: smtp.example.com\n"
                    "    username: cobranca@credora.example.com.br"))  # fmt: skip
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.startswith(f"{path}:11:")
    assert "delivery.smtp" in problem
    assert "username is set: give password_env or password_file" in problem


def test_smtp_with_username_and_password_env_loads(tmp_path: Path) -> None:
    text = variant(("  from_name: Financeiro Credora",
                    "  transport: smtp\n  smtp:\n    host: smtp.example.com\n"
                    "    username: cobranca@credora.example.com.br\n"
                    "    password_env: SMTP_SENHA"))  # fmt: skip
    config = load_config(write(tmp_path, text))
    assert config.delivery.smtp is not None
    assert config.delivery.smtp.password_env == "SMTP_SENHA"
    assert (config.delivery.smtp.port, config.delivery.smtp.security) == (587, "starttls")


# --- values ------------------------------------------------------------------------------------


def test_min_greater_than_max(tmp_path: Path) -> None:
    path = write(tmp_path, variant(("{min: 16, max: 45}", "{min: 10, max: 5}")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:30:")
    assert "layouts[1].selection.days" in problem
    assert "min (10) is greater than max (5)" in problem


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("10.10", Decimal("10.10")),
        ("0.29", Decimal("0.29")),  # the float 0.29 is 0.28999999999999998...
        ("1234567.89", Decimal("1234567.89")),
        ('"10.10"', Decimal("10.10")),
        ("10", Decimal("10")),
    ],
)
def test_min_balance_is_the_decimal_written(
    tmp_path: Path, written: str, expected: Decimal
) -> None:
    path = write(tmp_path, variant(("min_balance: 10.00", f"min_balance: {written}")))
    value = load_config(path).layouts[1].selection.min_balance
    assert isinstance(value, Decimal)
    assert value == expected  # exactly: Decimal(0.29) would be 0.28999999999999998...


def test_negative_min_balance_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, variant(("min_balance: 10.00", "min_balance: -1.00")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:31:")
    assert "layouts[1].selection.min_balance" in problem


@pytest.mark.parametrize("written", ["10,50", "1.234,56", "R$ 10"])
def test_min_balance_in_brazilian_notation_is_refused_not_misread(
    tmp_path: Path, written: str
) -> None:
    path = write(tmp_path, variant(("min_balance: 10.00", f"min_balance: {written}")))
    problem = only_problem(path)  # never 1050 or 1.234
    assert problem.startswith(f"{path}:31:")
    assert "layouts[1].selection.min_balance" in problem
    assert repr(written) in problem


@pytest.mark.parametrize("cnpj", ['"11.444.777/0001-6"', '"114447770001611"', '"11444777"'])
def test_cnpj_with_the_wrong_length(tmp_path: Path, cnpj: str) -> None:
    edit = ('tax_id: "11.444.777/0001-61"', f"tax_id: {cnpj}")
    assert_one_problem(tmp_path, edit, 13, "creditor.tax_id", "14")


@pytest.mark.parametrize("address", ["cobranca.credora.example.com.br", "cobranca@", "a b@c.com"])
def test_from_address_must_be_an_email(tmp_path: Path, address: str) -> None:
    path = write(
        tmp_path,
        variant(("from_address: cobranca@credora.example.com.br", f'from_address: "{address}"')),
    )
    problem = only_problem(path)
    assert problem.startswith(f"{path}:9:")
    assert "delivery.from_address" in problem
    assert "e-mail" in problem


def test_layout_name_must_be_a_slug(tmp_path: Path) -> None:
    path = write(tmp_path, variant(("  - name: segundo-aviso", "  - name: Segundo Aviso")))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:25:")
    assert "layouts[1].name" in problem and "lower-case" in problem


# --- every problem at once ---------------------------------------------------------------------


def test_three_mistakes_are_reported_together(tmp_path: Path) -> None:
    text = variant(
        ("timezone: America/Sao_Paulo", "timezone: Brasil/Sao_Paulo"),
        ('tax_id: "11.444.777/0001-61"', 'tax_id: "11.444.777/0001"'),
        ("      min_balance: 10.00\n    cadence_days: 15",
         "      min_balance: 10.00\n    cadense_days: 15"),
    )  # fmt: skip
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == 3, problems
    by_line = {int(p.removeprefix(f"{path}:").split(":")[0]): p for p in problems}
    assert set(by_line) == {1, 13, 32}
    assert "timezone" in by_line[1]
    assert "creditor.tax_id" in by_line[13]
    assert "layouts[1].cadense_days" in by_line[32]


def test_cron_and_duplicate_names_are_reported_with_schema_mistakes(tmp_path: Path) -> None:
    lines = BASE.splitlines()
    lines[0] = "timezone: America/Sao_Paulo"
    lines[12] = '  tax_id: "123"'  # schema mistake, line 13
    lines[18] = '    schedule: "0 25 * * *"'  # cron mistake, line 19
    lines[24] = "  - name: primeiro-aviso"  # duplicate name, line 25
    path = write(tmp_path, "\n".join(lines) + "\n")
    problems = problems_of(path)
    lines_named = sorted(int(p.removeprefix(f"{path}:").split(":")[0]) for p in problems)
    assert lines_named == [13, 19, 25], problems


# --- where the config file is found -------------------------------------------------------------


def test_explicit_config_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "config", BASE)  # a default candidate exists in the cwd
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "env.yaml"))
    assert find_config_path("outro.yaml") == Path("outro.yaml")
    assert find_config_path(tmp_path / "x.yaml") == tmp_path / "x.yaml"


def test_environment_variable_comes_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "config", BASE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "env.yaml"))
    assert find_config_path(None) == tmp_path / "env.yaml"  # even if it does not exist (yet)


def test_default_paths_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc" / "cobranca.yaml"
    local = Path("config/cobranca.yaml")
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATHS", (etc, local))
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    work = tmp_path / "work"
    write(work / "config", BASE)
    monkeypatch.chdir(work)
    assert find_config_path(None) == local
    write(etc.parent, BASE)
    assert find_config_path(None) == etc  # /etc/cobranca comes first
    monkeypatch.setenv(CONFIG_ENV, "")  # an empty variable is no choice
    assert find_config_path("") == etc


def test_real_default_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if Path("/etc/cobranca/cobranca.yaml").exists():
        pytest.skip("this machine has /etc/cobranca/cobranca.yaml")
    assert config_module.DEFAULT_CONFIG_PATHS == (
        Path("/etc/cobranca/cobranca.yaml"),
        Path("config/cobranca.yaml"),
    )
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(REPO)
    found = find_config_path(None)
    assert found == Path("config/cobranca.yaml")
    assert len(load_config(found).layouts) == 4


def test_no_config_found_says_what_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        config_module, "DEFAULT_CONFIG_PATHS", (tmp_path / "etc.yaml", Path("config/cobranca.yaml"))
    )
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        find_config_path(None)
    (message,) = info.value.problems
    assert "$COBRANCA_CONFIG" in message
    assert str(tmp_path / "etc.yaml") in message and "config/cobranca.yaml" in message
    assert "--config" in message


@pytest.mark.parametrize(
    "written", ['"Credora\\rLtda"', '"Credora\\tLtda"', "|\n    Credora\n    Ltda"]
)
def test_a_line_break_in_the_creditors_name_names_its_line(tmp_path: Path, written: str) -> None:
    edit = ("  name: Credora Indústria Ltda", f"  name: {written}")
    line = line_of(BASE, "Credora Indústria Ltda")
    assert_one_problem(tmp_path, edit, line, "creditor.name", "one line without control characters")


@pytest.mark.parametrize("written", ['"Financeiro\\rCredora"', '"Financeiro\\tCredora"',
                                     '"Financeiro\\x85Credora"'])  # fmt: skip
def test_the_senders_name_is_one_plain_line_as_the_creditors(tmp_path: Path, written: str) -> None:
    # The From header's display name: the same rule and message as the creditor's texts.
    edit = ("  from_name: Financeiro Credora", f"  from_name: {written}")
    line = line_of(BASE, "from_name:")
    assert_one_problem(
        tmp_path, edit, line, "delivery.from_name", "one line without control characters"
    )
