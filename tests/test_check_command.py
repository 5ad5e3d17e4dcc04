"""`cobranca check` and `cobranca run` through the real entry point: exit codes and messages.

Exit codes (cli.py): 0 OK, 1 a run had failures, 2 config/template/command line is wrong and
nothing was sent. Template problems must name ``file:line`` (or the config line of a subject)
and the layout, so finance knows which file to open.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cobranca import config as config_module
from cobranca.cli import main
from cobranca.config import CONFIG_ENV
from conftest import AS_OF, REPO, TEMPLATES, SmtpServer, config_data, write_config

SHIPPED = REPO / "config" / "cobranca.yaml"
COBRANCA = REPO / ".venv" / "bin" / "cobranca"

# Line numbers matter: the subject of layouts[1] is on line 23.
CONFIG = """\
timezone: America/Sao_Paulo
templates_dir: templates
source:
  url: sqlite:///protheus.db
delivery:
  from_address: cobranca@credora.example.com.br
creditor:
  name: Credora Indústria Ltda
  tax_id: "11444777000161"
  address: Avenida Paulista, 1000
  city: São Paulo
  state: SP
layouts:
  - name: primeiro-aviso
    schedule: "0 9 * * mon-fri"
    template: primeiro-aviso
    subject: "Aviso de título em aberto – {{ customer.name }}"
    selection:
      days: {min: 1, max: 15}
  - name: segundo-aviso
    schedule: "0 9 * * mon-fri"
    template: segundo-aviso
    subject: "Segundo aviso – {{ creditor.name }}"
    selection:
      days: {min: 16, max: 45}
"""
SUBJECT_LINE = 23

# A stand-alone HTML letter whose line 4 each test replaces with its mistake.
STANDALONE = """\
<p>{{ creditor.name }}</p>
<p>Prezado(a) {{ customer.name }},</p>
<p>Total em aberto: {{ totals.all|money }}</p>
@LINE4@
<p>Atenciosamente, {{ creditor.name }}</p>
"""


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_cobranca(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    return subprocess.run(
        [str(COBRANCA), *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """tmp_path/cobranca.yaml (CONFIG) with a private copy of templates/ beside it."""
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    config = tmp_path / "cobranca.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return config


def edit_config(config: Path, old: str, new: str) -> None:
    text = config.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    config.write_text(text.replace(old, new), encoding="utf-8")


def put_template(site: Path, name: str, line4: str) -> Path:
    path = site.parent / "templates" / name
    path.write_text(STANDALONE.replace("@LINE4@", line4), encoding="utf-8")
    return path


def append_line(path: Path, line: str) -> int:
    """Append one line to a template; returns its (1-based) line number."""
    text = path.read_text(encoding="utf-8").rstrip("\n") + "\n"
    number = text.count("\n") + 1
    path.write_text(f"{text}{line}\n", encoding="utf-8")
    return number


def problem_lines(err: str) -> list[str]:
    """The indented problem lines of `cobranca check`'s report."""
    return [line.strip() for line in err.splitlines() if line.startswith("  ")]


# --- the shipped example -----------------------------------------------------------------------


def test_check_shipped_config_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "check", "--config", str(SHIPPED))
    assert code == 0, err
    assert f"{SHIPPED.resolve()}: OK (4 layouts, templates in {TEMPLATES})" in out
    assert "error" not in err.lower()


def test_check_shipped_config_real_process_exit_status() -> None:
    result = run_cobranca("check", "--config", "config/cobranca.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK (4 layouts" in result.stdout


def test_check_finds_config_through_the_environment(
    site: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(site))
    code, out, err = cli(capsys, "check")
    assert code == 0, err
    assert f"{site}: OK (2 layouts, templates in {site.parent / 'templates'})" in out


def test_check_broken_template_real_process_exit_status(site: Path) -> None:
    put_template(site, "primeiro-aviso.html.j2", "<p>{{ customer.name | }}</p>")
    result = run_cobranca("check", "--config", str(site), cwd=site.parent)
    assert result.returncode == 2
    assert "primeiro-aviso.html.j2:4:" in result.stderr
    assert result.stdout == ""


# --- config errors -----------------------------------------------------------------------------


def test_check_config_error_exits_2_with_file_line(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_config(site, "{min: 16, max: 45}", "{min: 16, max: 45}\n    cadense_days: 15")
    code, out, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    assert out == ""
    assert "configuration error" in err
    assert f"{site}:26:" in err
    assert "layouts[1].cadense_days: unknown key; did you mean 'cadence_days'?" in err


def test_check_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nao-existe.yaml"
    code, _, err = cli(capsys, "check", "--config", str(missing))
    assert code == 2
    assert f"{missing}: file not found" in err


def test_check_without_any_config_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        config_module, "DEFAULT_CONFIG_PATHS", (tmp_path / "etc.yaml", Path("config/cobranca.yaml"))
    )
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "check")
    assert code == 2
    assert "no config file found" in err and "--config" in err


# --- template errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remove", "template", "named"),
    [
        (None, "terceiro-aviso", "terceiro-aviso.html.j2"),  # config names a template never made
        ("segundo-aviso.txt.j2", "segundo-aviso", "segundo-aviso.txt.j2"),  # half of a pair gone
    ],
)
def test_check_missing_template_names_file_and_layout(
    site: Path,
    capsys: pytest.CaptureFixture[str],
    remove: str | None,
    template: str,
    named: str,
) -> None:
    if remove:
        (site.parent / "templates" / remove).unlink()
    edit_config(site, "template: segundo-aviso", f"template: {template}")
    code, out, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    assert out == ""
    (problem,) = problem_lines(err)
    assert named in problem
    assert "template file not found" in problem
    assert str(site.parent / "templates") in problem  # where it looked
    assert "(layout segundo-aviso, template set at " in problem


def test_check_missing_templates_dir(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_config(site, "templates_dir: templates", "templates_dir: modelos")
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    problems = problem_lines(err)
    assert len(problems) == 2  # one per layout
    assert all(str(site.parent / "modelos") in p for p in problems)


def test_check_unclosed_if_names_file_and_line(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = site.parent / "templates" / "primeiro-aviso.html.j2"
    line = append_line(html, "{% if overdue %}")
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    (problem,) = problem_lines(err)
    assert f"primeiro-aviso.html.j2:{line}: syntax error" in problem
    assert "endif" in problem
    assert "(layout primeiro-aviso, template set at " in problem


def test_check_syntax_error_at_known_line(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    put_template(site, "primeiro-aviso.html.j2", "<p>{% for t in overdue %}{{ t.number }}</p>")
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    (problem,) = problem_lines(err)
    assert f"{site.parent / 'templates' / 'primeiro-aviso.html.j2'}:" in problem
    assert "primeiro-aviso.html.j2:" in problem and "syntax error" in problem
    assert "endfor" in problem
    assert "(layout primeiro-aviso, template set at " in problem


def test_check_undefined_variable_names_file_and_line(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_template(site, "primeiro-aviso.html.j2", "<p>Cliente: {{ customer.nome }}</p>")
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    (problem,) = problem_lines(err)
    assert "primeiro-aviso.html.j2:4:" in problem
    assert "nome" in problem
    assert "(layout primeiro-aviso, template set at " in problem


def test_check_undefined_variable_in_plain_text_version(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put_template(site, "segundo-aviso.txt.j2", "Vencimento: {{ overdue[0].vencimento|date }}")
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    (problem,) = problem_lines(err)
    assert "segundo-aviso.txt.j2:4:" in problem
    assert "vencimento" in problem
    assert "(layout segundo-aviso, template set at " in problem


def test_check_error_in_a_textos_file_names_that_file(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    textos = site.parent / "templates" / "textos" / "primeiro-aviso.j2"
    line = append_line(textos, "{{ customer.nome }}")
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    problems = problem_lines(err)
    assert problems
    assert all(f"textos/primeiro-aviso.j2:{line}:" in p for p in problems), problems
    assert all("(layout primeiro-aviso, template set at " in p for p in problems)


def test_check_syntax_error_in_a_textos_file_names_that_file(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    textos = site.parent / "templates" / "textos" / "segundo-aviso.j2"
    line = append_line(textos, "{{ customer.name | }}")
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    (problem,) = problem_lines(err)
    assert f"textos/segundo-aviso.j2:{line}:" in problem
    assert "(layout segundo-aviso, template set at " in problem


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ('"Segundo aviso {{ creditor.name "', "syntax error"),
        ('"Segundo aviso {% if overdue %}"', "syntax error"),
        ('"Segundo aviso – {{ customer.nome }}"', "nome"),
    ],
)
def test_check_bad_subject_points_at_the_config_line(
    site: Path, capsys: pytest.CaptureFixture[str], subject: str, expected: str
) -> None:
    edit_config(site, '"Segundo aviso – {{ creditor.name }}"', subject)
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    (problem,) = problem_lines(err)
    assert problem.startswith(f"{site}:{SUBJECT_LINE}:")
    assert "layouts[1].subject" in problem
    assert expected in problem


@pytest.mark.parametrize(
    "escape",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ customer.name.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ creditor.update({'name': 'Outro'}) }}",
        "{{ overdue.append(overdue[0]) }}",
    ],
)
def test_check_reports_sandbox_escape_without_running_it(
    site: Path, capsys: pytest.CaptureFixture[str], escape: str
) -> None:
    put_template(site, "primeiro-aviso.html.j2", f"<p>{escape}</p>")
    code, out, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    (problem,) = problem_lines(err)
    assert "primeiro-aviso.html.j2:4:" in problem
    assert "SecurityError" in problem
    assert "<class" not in out + err  # the expression's value was never produced


def test_check_reports_sandbox_escape_in_subject(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_config(site, "{{ creditor.name }}", "{{ creditor.name.__class__ }}")
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    (problem,) = problem_lines(err)
    assert problem.startswith(f"{site}:{SUBJECT_LINE}:")
    assert "SecurityError" in problem


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("<p>{{ customer.name|safe }}</p>", "safe"),
        ("{% autoescape false %}<p>{{ customer.name }}</p>{% endautoescape %}", "autoescape"),
        ('{% include "textos/primeiro-aviso.j2" %}', "may only include templates named *.html.j2"),
    ],
    ids=["safe filter", "autoescape off", "plain-text include"],
)
def test_check_refuses_what_would_print_customer_data_unescaped(
    site: Path, capsys: pytest.CaptureFixture[str], source: str, named: str
) -> None:
    put_template(site, "primeiro-aviso.html.j2", source)
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    (problem,) = problem_lines(err)
    assert "primeiro-aviso.html.j2:4:" in problem
    assert named in problem


def test_check_reports_a_macro_that_calls_itself(site: Path) -> None:
    put_template(
        site,
        "primeiro-aviso.html.j2",
        "{% macro linha() %}{{ linha() }}{% endmacro %}{{ linha() }}",
    )
    result = run_cobranca("check", "--config", str(site), cwd=site.parent)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2
    assert "primeiro-aviso.html.j2:4:" in result.stderr


def test_check_reports_every_broken_layout(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    put_template(site, "primeiro-aviso.html.j2", "{{ customer.nome }}")
    edit_config(site, "{{ creditor.name }}", "{{ creditor.name ")
    code, _, err = cli(capsys, "check", "--config", str(site))
    assert code == 2
    problems = problem_lines(err)
    assert len(problems) == 2, problems
    assert "(layout primeiro-aviso, template set at " in problems[0]
    assert problems[1].startswith(f"{site}:{SUBJECT_LINE}:")


# --- cobranca run ------------------------------------------------------------------------------


def smtp_config(tmp_path: Path, demo_sqlite: str, smtp_server: SmtpServer, **changes: Any) -> Path:
    data = config_data(
        source_url=demo_sqlite,
        history_url=f"sqlite:///{tmp_path / 'history.db'}",
        smtp=smtp_server,
    )
    data.update(changes)
    return write_config(tmp_path / "cobranca.yaml", data)


def test_run_with_valid_config_sends(
    tmp_path: Path,
    demo_sqlite: str,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The control for the tests below: this setup does send letters when nothing is wrong."""
    path = smtp_config(tmp_path, demo_sqlite, smtp_server)
    code, out, err = cli(capsys, "run", "--config", str(path), "--as-of", AS_OF.isoformat())
    assert code == 0, err
    assert smtp_server.received
    assert "primeiro-aviso" in out


@pytest.mark.parametrize("mistake", ["config", "template", "subject"])
def test_run_with_broken_config_exits_2_and_sends_nothing(
    tmp_path: Path,
    demo_sqlite: str,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
    mistake: str,
) -> None:
    data = config_data(
        source_url=demo_sqlite,
        history_url=f"sqlite:///{tmp_path / 'history.db'}",
        smtp=smtp_server,
    )
    layouts = [dict(layout) for layout in data["layouts"]]
    if mistake == "config":
        layouts[1]["cadense_days"] = layouts[1].pop("cadence_days")
    elif mistake == "template":
        templates = tmp_path / "templates"
        shutil.copytree(TEMPLATES, templates)
        append_line(templates / "primeiro-aviso.txt.j2", "{% if overdue %}")
        data["templates_dir"] = str(templates)
    else:
        layouts[0]["subject"] = "Lembrete {{ creditor.name"
    data["layouts"] = layouts
    path = write_config(tmp_path / "cobranca.yaml", data)

    code, out, err = cli(capsys, "run", "--config", str(path), "--as-of", AS_OF.isoformat())
    assert code == 2
    assert "configuration error" in err
    assert str(path) in err or "primeiro-aviso.txt.j2" in err
    assert out == ""
    assert smtp_server.received == []
    assert not (tmp_path / "history.db").exists()  # nothing recorded either


def test_run_unknown_layout_exits_2_naming_the_known_ones(
    tmp_path: Path,
    demo_sqlite: str,
    smtp_server: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = smtp_config(tmp_path, demo_sqlite, smtp_server)
    code, out, err = cli(
        capsys, "run", "--config", str(path), "--as-of", AS_OF.isoformat(),
        "primeiro-aviso", "terceiro-aviso",
    )  # fmt: skip
    assert code == 2
    assert "unknown layout 'terceiro-aviso'" in err
    assert "lembrete-vencimento, primeiro-aviso" in err
    assert out == ""
    assert smtp_server.received == []  # the known layout given with it did not run either


def test_run_with_invalid_as_of_date_is_a_usage_error(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--config", str(site), "--as-of", "2026-13-01"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--as-of" in err
    assert "not a date in YYYY-MM-DD form: '2026-13-01'" in err


def test_run_invalid_as_of_real_process_exit_status(site: Path) -> None:
    result = run_cobranca("run", "--config", str(site), "--as-of", "04/12/2026", cwd=site.parent)
    assert result.returncode == 2
    assert "YYYY-MM-DD" in result.stderr


def test_module_entry_point_matches_console_script(site: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cobranca", "check", "--config", str(site)],
        cwd=site.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "OK (2 layouts" in result.stdout
