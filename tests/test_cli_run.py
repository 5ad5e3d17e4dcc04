"""`cobranca run` and `cobranca demo-db` from the command line: output formats and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from cobranca.cli import main
from conftest import AS_OF, SmtpServer, config_data, free_port, write_config


def _config(tmp_path: Path, source: str, smtp: SmtpServer | None = None, port: int = 0) -> Path:
    data = config_data(
        source_url=source, history_url=f"sqlite:///{tmp_path / 'h.db'}", smtp=smtp,
        outbox=tmp_path / "outbox",
    )  # fmt: skip
    if port:
        data["delivery"]["transport"] = "smtp"
        data["delivery"]["smtp"] = {"host": "127.0.0.1", "port": port, "security": "none",
                                    "timeout_seconds": 5}  # fmt: skip
    return write_config(tmp_path / "c.yaml", data)


def test_run_json_summary_matches_what_was_delivered(
    demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, demo_sqlite, smtp_server)
    code = main(["run", "--config", str(path), "--as-of", AS_OF.isoformat(), "--format", "json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["ok"] is True
    by_layout = {entry["layout"]: entry for entry in summary["layouts"]}
    assert set(by_layout) == {"lembrete-vencimento", "primeiro-aviso"}
    assert sum(e["sent"] for e in by_layout.values()) == len(smtp_server.received) > 0
    assert all(e["as_of"] == AS_OF.isoformat() for e in by_layout.values())
    assert by_layout["primeiro-aviso"]["prints"]  # the demo has customers without e-mail

    code = main(["run", "primeiro-aviso", "--config", str(path), "--as-of", AS_OF.isoformat()])
    out = capsys.readouterr().out
    assert code == 0
    assert "layout primeiro-aviso" in out and "lembrete-vencimento" not in out
    assert "already_claimed: today's letter exists already: sent, being sent" in out
    assert "carried over" not in out  # every letter went in the first run


def test_run_exits_1_when_letters_fail_and_records_them(
    demo_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, demo_sqlite, port=free_port())  # nothing listens there
    code = main(["run", "primeiro-aviso", "--config", str(path), "--as-of", AS_OF.isoformat()])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed:" in out and "cannot connect to SMTP" in out
    engine = create_engine(f"sqlite:///{tmp_path / 'h.db'}")
    with engine.connect() as connection:
        statuses = dict(connection.execute(text(
            "SELECT status, count(*) FROM cobranca_letters GROUP BY status"
        )).all())  # fmt: skip
    engine.dispose()
    # The first letter failed after its retries; the rest wait, planned, for the next run.
    assert statuses["failed_temporary"] == 1 and statuses["planned"] > 0
    assert "sent" not in statuses and "sending" not in statuses


def test_run_exits_1_when_the_source_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, f"sqlite:///{tmp_path / 'absent.db'}")
    code = main(["run", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "does not exist" in out and "cobranca demo-db" in out


def test_demo_db_command_is_deterministic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dumps = []
    for name in ("a.db", "b.db"):
        url = f"sqlite:///{tmp_path / name}"
        argv = [
            "demo-db",
            "--url",
            url,
            "--customers",
            "12",
            "--seed",
            "3",
            "--as-of",
            "2026-12-04",
        ]
        assert main(argv) == 0
        assert "12 customers" in capsys.readouterr().out
        engine = create_engine(url)
        with engine.connect() as connection:
            dumps.append(connection.execute(text("SELECT * FROM se1010 ORDER BY r_e_c_n_o_")).all())
        engine.dispose()
    assert dumps[0] == dumps[1] and len(dumps[0]) > 12


def test_unwritable_outbox_fails_letters_with_the_reason(
    demo_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "outbox"
    blocker.write_text("a file where the outbox folder should be")
    path = _config(tmp_path, demo_sqlite)
    code = main(["run", "primeiro-aviso", "--config", str(path), "--as-of", AS_OF.isoformat()])
    out = capsys.readouterr().out
    assert code == 1
    assert "cannot create outbox" in out


@pytest.mark.parametrize("options_first", [True, False])
def test_the_common_options_work_before_the_command_as_after_it(
    demo_sqlite: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], options_first: bool
) -> None:
    # `--help` shows them before the command; a subcommand's own defaults used to overwrite
    # them there, so `cobranca --config F check` read no config and logged in the default way.
    path = str(_config(tmp_path, demo_sqlite))
    command = ["run", "--dry-run", "--as-of", AS_OF.isoformat(), "--format", "json"]

    def run(*options: str) -> str:
        argv = [*options, *command] if options_first else [*command, *options]
        assert main(argv) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out)["ok"] is True
        return captured.err

    logged = run("--config", path, "--log-format", "json").splitlines()
    levels = {json.loads(line)["level"] for line in logged}
    assert "info" in levels and levels <= {"info", "warning"}  # the demo's bad e-mail entries
    quiet = run("--config", path, "--log-level", "WARNING").splitlines()
    assert all(line.startswith("WARNING ") for line in quiet)  # the INFO lines are gone
    # What is given after the command wins over what is given before it.
    assert main(["--config", str(tmp_path / "missing.yaml"), "check", "--config", path]) == 0
