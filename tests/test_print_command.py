"""`cobranca print LAYOUT`: letters that need paper, as PDF, re-read from the ERP and recorded."""

from __future__ import annotations

import argparse
import io
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from sqlalchemy import bindparam, create_engine, text

from cobranca.config import Config, load_config
from cobranca.demo import HOSTILE_CODE
from cobranca.history import HistoryStore, LetterRecord
from cobranca.models import LetterStatus
from cobranca.pdf import POOL_FROM
from cobranca.printing import add_print_parser, print_command
from cobranca.render import amount
from cobranca.runner import run_layouts
from conftest import AS_OF, LAYOUTS, config_data, write_config

LAYOUT = "atrasados"
# Overdue 1 to 120 days: on the 40-customer demo, four customers without a usable e-mail.
PRINT_LAYOUTS: list[dict[str, Any]] = [
    *LAYOUTS,
    {
        "name": LAYOUT,
        "schedule": "0 10 * * mon-fri",
        "template": "segundo-aviso",
        "subject": "Títulos vencidos – {{ creditor.name }}",
        "selection": {"days": {"min": 1, "max": 120}},
        "cadence_days": 7,
    },
]
OPERATOR = "maria.financeiro"


@pytest.fixture
def config(demo_sqlite: str, tmp_path: Path) -> Config:
    data = config_data(
        source_url=demo_sqlite,
        history_url=f"sqlite:///{tmp_path / 'history.db'}",
        outbox=tmp_path / "outbox",
        layouts=PRINT_LAYOUTS,
    )
    return load_config(write_config(tmp_path / "cobranca.yaml", data))


@pytest.fixture
def after_run(config: Config) -> list[LetterRecord]:
    """The daemon's run of the layout, by e-mail to an outbox: the letters left for paper."""
    report = run_layouts(config, [LAYOUT], as_of=AS_OF)
    assert report.ok, report.as_dict()
    needing = _letters(config, LetterStatus.PRINT_NEEDED)
    assert len(needing) >= 2
    return needing


def _letters(config: Config, status: LetterStatus | None = None) -> list[LetterRecord]:
    history = HistoryStore(config.history.engine_url())
    try:
        return history.letters(layout=LAYOUT, status=status)
    finally:
        history.close()


def _run(config: Config, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="cobranca")
    add_print_parser(parser.add_subparsers(dest="command"), [])
    return print_command(config, parser.parse_args(["print", *argv]))


def _text(path: Path) -> str:
    reader = PdfReader(io.BytesIO(path.read_bytes()))
    return "\n".join(page.extract_text() or "" for page in reader.pages).replace("\xa0", " ")


def _number(title_key: str) -> str:
    return title_key.split("|")[2]


def test_prints_every_letter_awaiting_paper_and_records_it(
    config: Config, after_run: list[LetterRecord], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "cartas.pdf"
    assert _run(config, LAYOUT, "--output", str(output), "--operator", OPERATOR) == 0
    content = _text(output)
    reader = PdfReader(io.BytesIO(output.read_bytes()))
    assert len(reader.pages) >= len(after_run)
    for record in after_run:
        assert record.customer_name in content
        for title in record.titles:
            assert _number(title.title_key) in content
            # Table cells carry amounts without "R$" (the table is headed "valores em R$").
            assert amount(title.balance) in content
    printed = {r.id: r for r in _letters(config, LetterStatus.PRINTED)}
    assert set(printed) == {r.id for r in after_run}
    history = HistoryStore(config.history.engine_url())
    try:
        for record in printed.values():
            assert not record.needs_print
            assert str(output.resolve()) in record.reason
            last = history.events(record.id)[-1]
            assert (last.status, last.actor) == ("printed", OPERATOR)
    finally:
        history.close()
    out = capsys.readouterr().out
    assert f"printed {len(after_run)} letter(s)" in out

    # Nothing is left to print: a second run says so and writes nothing.
    again = tmp_path / "again.pdf"
    assert _run(config, LAYOUT, "--output", str(again), "--operator", OPERATOR) == 2
    assert "nothing to print" in capsys.readouterr().err
    assert not again.exists()


def test_split_writes_one_file_per_customer(
    config: Config, after_run: list[LetterRecord], tmp_path: Path
) -> None:
    folder = tmp_path / "cartas"
    assert _run(config, LAYOUT, "--split", str(folder), "--operator", OPERATOR) == 0
    files = sorted(p.name for p in folder.iterdir())
    expected = sorted(f"{LAYOUT}-{r.customer_code}-{r.customer_store}.pdf" for r in after_run)
    assert files == expected
    for record in after_run:
        content = _text(folder / f"{LAYOUT}-{record.customer_code}-{record.customer_store}.pdf")
        assert record.customer_name in content
        others = [r.customer_name for r in after_run if r.id != record.id]
        assert not any(name in content for name in others)
    printed = _letters(config, LetterStatus.PRINTED)
    assert {r.id for r in printed} == {r.id for r in after_run}
    for record in printed:
        name = f"{LAYOUT}-{record.customer_code}-{record.customer_store}.pdf"
        assert str((folder / name).resolve()) in record.reason


def test_default_file_name_in_the_current_folder(
    config: Config, after_run: list[LetterRecord], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    today = datetime.now(config.zone).date().isoformat()
    assert _run(config, LAYOUT, "--operator", OPERATOR) == 0
    assert (tmp_path / f"cartas-{LAYOUT}-{today}.pdf").exists()


def test_a_title_paid_since_drops_out_and_a_letter_left_empty_is_skipped(
    config: Config, after_run: list[LetterRecord], demo_sqlite: str, tmp_path: Path
) -> None:
    paid, partly = after_run[0], next(r for r in after_run if len(r.titles) >= 2)
    assert paid.id != partly.id
    gone = [t.recno for t in paid.titles] + [partly.titles[0].recno]
    engine = create_engine(demo_sqlite)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE SE1010 SET E1_SALDO = 0 WHERE R_E_C_N_O_ IN :recnos").bindparams(
                bindparam("recnos", expanding=True)
            ),
            {"recnos": gone},
        )
    engine.dispose()
    output = tmp_path / "cartas.pdf"
    assert _run(config, LAYOUT, "--output", str(output), "--operator", OPERATOR) == 0
    content = _text(output)
    assert paid.customer_name not in content
    assert partly.customer_name in content
    assert _number(partly.titles[0].title_key) not in content
    assert _number(partly.titles[1].title_key) in content
    by_id = {r.id: r for r in _letters(config)}
    assert by_id[paid.id].status == LetterStatus.SKIPPED
    assert "paid or written off" in by_id[paid.id].reason
    assert by_id[partly.id].status == LetterStatus.PRINTED


def test_customer_with_an_email_gets_a_new_printed_letter_recorded_as_by_hand(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_layouts(config, [LAYOUT], as_of=AS_OF)
    before = {r.id for r in _letters(config)}
    hostile = next(r for r in _letters(config) if r.customer_code == HOSTILE_CODE)
    assert hostile.status == LetterStatus.SENT  # it has a valid e-mail; today's letter went
    output = tmp_path / "manual.pdf"
    # One letter of a layout per customer and day: today's went by e-mail.
    same_day = ["--customer", f"{HOSTILE_CODE}/01", "--as-of", AS_OF.isoformat()]
    assert _run(config, LAYOUT, *same_day, "--output", str(output)) == 2
    assert "already has this layout's letter for the day" in capsys.readouterr().err
    assert not output.exists()
    tomorrow = AS_OF.fromordinal(AS_OF.toordinal() + 1).isoformat()
    argv = ["--customer", f"{HOSTILE_CODE}/01", "--as-of", tomorrow, "--output", str(output)]
    assert _run(config, LAYOUT, *argv, "--operator", OPERATOR) == 0
    content = _text(output)
    assert '<b>Bar & "Zé"</b>' in content  # the hostile name, literally
    new = [r for r in _letters(config) if r.id not in before]
    assert len(new) == 1
    letter = new[0]
    assert (letter.customer_code, letter.status, letter.transport) == (
        HOSTILE_CODE, LetterStatus.PRINTED, "print"
    )  # fmt: skip
    assert letter.as_of.isoformat() == tomorrow
    assert OPERATOR in letter.reason and str(output.resolve()) in letter.reason
    assert letter.titles and all(_number(t.title_key) in content for t in letter.titles)
    history = HistoryStore(config.history.engine_url())
    try:
        assert history.events(letter.id)[-1].actor == OPERATOR
    finally:
        history.close()


def test_customer_with_a_letter_awaiting_print_gets_that_letter(
    config: Config, after_run: list[LetterRecord], tmp_path: Path
) -> None:
    chosen = after_run[0]
    output = tmp_path / "um.pdf"
    argv = ["--customer", chosen.customer_code, "--output", str(output), "--operator", OPERATOR]
    assert _run(config, LAYOUT, *argv) == 0
    content = _text(output)
    assert chosen.customer_name in content
    assert not any(r.customer_name in content for r in after_run[1:])
    by_id = {r.id: r for r in _letters(config)}
    assert by_id[chosen.id].status == LetterStatus.PRINTED
    assert all(by_id[r.id].status == LetterStatus.PRINT_NEEDED for r in after_run[1:])
    assert len(by_id) == len({r.id for r in _letters(config)})  # no new letter was made


def test_as_of_prints_only_that_days_letters(
    config: Config, after_run: list[LetterRecord], tmp_path: Path
) -> None:
    later = AS_OF + timedelta(days=8)  # past the layout's 7-day cadence
    assert run_layouts(config, [LAYOUT], as_of=later).ok
    waiting_later = {r.id for r in _letters(config, LetterStatus.PRINT_NEEDED) if r.as_of == later}
    assert waiting_later
    output = tmp_path / "cartas.pdf"
    assert _run(config, LAYOUT, "--as-of", AS_OF.isoformat(), "--output", str(output)) == 0
    assert {r.id for r in _letters(config, LetterStatus.PRINTED)} == {r.id for r in after_run}
    assert {r.id for r in _letters(config, LetterStatus.PRINT_NEEDED)} == waiting_later


def test_dry_run_writes_and_records_nothing(
    config: Config, after_run: list[LetterRecord], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "cartas.pdf"
    assert _run(config, LAYOUT, "--output", str(output), "--dry-run") == 0
    assert not output.exists()
    assert "would print" in capsys.readouterr().out
    assert {r.id for r in _letters(config, LetterStatus.PRINT_NEEDED)} == {r.id for r in after_run}


def test_unknown_layout_or_customer_is_refused_and_nothing_is_written(
    config: Config, after_run: list[LetterRecord], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "cartas.pdf"
    assert _run(config, "nao-existe", "--output", str(output)) == 2
    assert "unknown layout 'nao-existe'" in capsys.readouterr().err
    argv = ["--customer", "999999", "--customer", after_run[0].customer_code]
    assert _run(config, LAYOUT, *argv, "--output", str(output)) == 2
    err = capsys.readouterr().err
    assert "999999" in err and "nothing was printed" in err
    assert _run(config, LAYOUT, "--customer", "bad key", "--output", str(output)) == 2
    assert not output.exists()
    assert {r.id for r in _letters(config, LetterStatus.PRINT_NEEDED)} == {r.id for r in after_run}


def test_all_selected_prints_everyone_the_layout_selects_on_the_day(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Nothing ran yet: every customer the reminder selects gets a new letter, e-mail or not.
    output = tmp_path / "lembretes.pdf"
    argv = ["--all-selected", "--as-of", AS_OF.isoformat(), "--output", str(output)]
    assert _run(config, "lembrete-vencimento", *argv, "--operator", OPERATOR) == 0
    history = HistoryStore(config.history.engine_url())
    try:
        printed = history.letters(layout="lembrete-vencimento", status=LetterStatus.PRINTED)
    finally:
        history.close()
    assert len(printed) >= 2
    content = _text(output)
    assert all(r.customer_name in content for r in printed)
    # A second time, each already has the day's letter.
    capsys.readouterr()
    assert _run(config, "lembrete-vencimento", *argv, "--operator", OPERATOR) == 2
    captured = capsys.readouterr()
    assert "nothing to print" in captured.err
    assert captured.out.count("already has this layout's letter") == len(printed)


def test_an_unwritable_output_records_nothing(
    config: Config, after_run: list[LetterRecord], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert _run(config, LAYOUT, "--output", str(folder), "--operator", OPERATOR) == 1
    assert "cannot write" in capsys.readouterr().err
    assert {r.id for r in _letters(config, LetterStatus.PRINT_NEEDED)} == {r.id for r in after_run}


def test_a_failure_on_a_later_file_leaves_no_file_and_records_nothing(
    config: Config, after_run: list[LetterRecord], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Files are written as they render, under temporary names that go when one fails."""
    templates = tmp_path / "templates"
    shutil.copytree(config.templates_dir, templates)
    last = max(r.customer_code for r in after_run)
    (templates / "impressa" / "segundo-aviso.html.j2").write_text(
        "<html><body>\n<p>{{ customer.name }}</p>\n"
        f"{{% if customer.code == '{last}' %}}{{{{ customer.no_such_field }}}}{{% endif %}}\n"
        "</body></html>"
    )
    custom = config.model_copy(update={"templates_dir": templates})
    folder = tmp_path / "cartas"
    assert _run(custom, LAYOUT, "--split", str(folder), "--operator", OPERATOR) == 2
    err = capsys.readouterr().err
    assert "template problem, nothing printed" in err and "no_such_field" in err
    assert list(folder.iterdir()) == []  # the earlier customers' files were removed too
    assert {r.id for r in _letters(config, LetterStatus.PRINT_NEEDED)} == {r.id for r in after_run}


def test_split_of_letters_enough_for_worker_processes_gives_each_its_own_file(
    config: Config, tmp_path: Path
) -> None:
    """All the letters render in one stream (worker processes from POOL_FROM on), each
    routed to its customer's file in order."""
    folder = tmp_path / "cartas"
    argv = ["--all-selected", "--as-of", AS_OF.isoformat(), "--split", str(folder)]
    assert _run(config, LAYOUT, *argv, "--operator", OPERATOR) == 0
    printed = _letters(config, LetterStatus.PRINTED)
    assert len(printed) >= POOL_FROM
    assert len(list(folder.iterdir())) == len(printed)
    # Each letter names its customer as "CODE / loja STORE" (a name may hold line breaks).
    marks = {r.id: f"{r.customer_code} / loja {r.customer_store}" for r in printed}
    for record in printed:
        content = _text(folder / f"{LAYOUT}-{record.customer_code}-{record.customer_store}.pdf")
        assert marks[record.id] in content
        assert not any(mark in content for id_, mark in marks.items() if id_ != record.id)
