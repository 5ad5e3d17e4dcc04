"""`cobranca report`: per-layout figures and payments after the letter, on a real demo run."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from itertools import zip_longest
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    inspect,
    text,
)

from cobranca import report as report_module
from cobranca.config import Config, load_config
from cobranca.history import HistoryStore, LetterRecord
from cobranca.models import LetterStatus
from cobranca.report import add_report_parser, report_command
from cobranca.runner import run_layouts
from conftest import AS_OF, LAYOUTS, config_data, write_config

REPORT_LAYOUTS: list[dict[str, Any]] = [
    *LAYOUTS,
    {
        "name": "atrasados",
        "schedule": "0 10 * * mon-fri",
        "template": "segundo-aviso",
        "subject": "Títulos vencidos – {{ creditor.name }}",
        "selection": {"days": {"min": 16, "max": 120}},
        "cadence_days": 7,
    },
]
# Days from the letter to the write-off → in which windows (7, 15, 30) the título counts.
PAYMENTS = {3: (7, 15, 30), 10: (15, 30), 20: (30,), 40: (), -1: ()}
HOSTILE_KIND = '<img src=x onerror="alert(1)">'


@pytest.fixture(autouse=True)
def _on_the_day_of_the_run() -> Iterator[None]:
    """Letters go out, and customers answer, on AS_OF: the day the reports ask about."""
    with time_machine.travel(datetime.combine(AS_OF, time(10), ZoneInfo("America/Sao_Paulo"))):
        yield


@pytest.fixture
def config(demo_sqlite: str, tmp_path: Path) -> Config:
    data = config_data(
        source_url=demo_sqlite,
        history_url=f"sqlite:///{tmp_path / 'history.db'}",
        outbox=tmp_path / "outbox",
        layouts=REPORT_LAYOUTS,
    )
    return load_config(write_config(tmp_path / "cobranca.yaml", data))


@pytest.fixture
def letters(config: Config) -> list[LetterRecord]:
    result = run_layouts(config, as_of=AS_OF)
    assert result.ok, result.as_dict()
    history = HistoryStore(config.history.engine_url())
    try:
        return history.letters()
    finally:
        history.close()


def _report(config: Config, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="cobranca")
    add_report_parser(parser.add_subparsers(dest="command"), [])
    out = io.StringIO()
    code = report_command(config, parser.parse_args(["report", *argv]), out)
    return code, out.getvalue()


def _json(config: Config, *argv: str) -> dict[str, Any]:
    code, output = _report(
        config, "--from", str(AS_OF), "--to", str(AS_OF), "--format", "json", *argv
    )
    assert code == 0
    return json.loads(output)


def _pay(config: Config, letters: list[LetterRecord]) -> Counter[tuple[str, int]]:
    """Settle one título of distinct sent letters per entry of PAYMENTS; the expected counts."""
    sent = [letter for letter in letters if letter.status == LetterStatus.SENT]
    in_letters = Counter(t.recno for letter in letters for t in letter.titles)
    expected: Counter[tuple[str, int]] = Counter()
    engine = create_engine(config.source.engine_url())
    by_layout = [[x for x in sent if x.layout == name] for name in sorted({x.layout for x in sent})]
    chosen = (x for group in zip_longest(*by_layout) for x in group if x is not None)
    with engine.begin() as connection:
        for days, windows in PAYMENTS.items():
            letter = next(chosen)
            title = next(t for t in letter.titles if in_letters[t.recno] == 1)
            day = letter.sent_at.astimezone(config.zone).date() + timedelta(days=days)
            changed = connection.execute(
                text("UPDATE se1010 SET e1_saldo = 0, e1_baixa = :baixa WHERE r_e_c_n_o_ = :r"),
                {"baixa": day.strftime("%Y%m%d"), "r": title.recno},
            ).rowcount
            assert changed == 1
            for n in windows:
                expected[(letter.layout, n)] += 1
    engine.dispose()
    return expected


def test_paid_within_windows_hand_computed(config: Config, letters: list[LetterRecord]) -> None:
    expected = _pay(config, letters)
    assert sum(expected[(lay, 7)] for lay in ("lembrete-vencimento", "primeiro-aviso",
                                              "atrasados")) == 1  # fmt: skip
    data = _json(config)
    total = data["total"]
    assert total["paid_within"] == {"7": 1, "15": 2, "30": 3}
    for figures in data["layouts"]:
        for n in (7, 15, 30):
            assert figures["paid_within"][str(n)] == expected[(figures["layout"], n)], figures
    sent = [letter for letter in letters if letter.status == LetterStatus.SENT]
    assert total["titles"] == sum(len({t.recno for t in letter.titles}) for letter in sent)
    assert total["titles_missing"] == 0


def test_paid_title_counts_once_per_letter(config: Config, letters: list[LetterRecord]) -> None:
    """A write-off on the letter's own day counts in every window, once; a partial one never."""
    letter = next(x for x in letters if x.status == LetterStatus.SENT and len(x.titles) >= 2)
    first, second = letter.titles[0], letter.titles[1]
    day = letter.sent_at.astimezone(config.zone).date().strftime("%Y%m%d")
    engine = create_engine(config.source.engine_url())
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE se1010 SET e1_saldo = 0, e1_baixa = :d WHERE r_e_c_n_o_ = :r"),
            {"d": day, "r": first.recno},
        )
        connection.execute(  # partially paid: balance left
            text("UPDATE se1010 SET e1_saldo = 10.5, e1_baixa = :d WHERE r_e_c_n_o_ = :r"),
            {"d": day, "r": second.recno},
        )
    engine.dispose()
    assert _json(config)["total"]["paid_within"] == {"7": 1, "15": 1, "30": 1}


def test_letter_counts_equal_history(config: Config, letters: list[LetterRecord]) -> None:
    statuses = Counter((x.layout, x.status) for x in letters)
    assert statuses[("atrasados", "print_needed")] >= 1  # the demo has customers without e-mail
    data = _json(config)
    by_layout = {f["layout"]: f for f in data["layouts"]}
    assert set(by_layout) == {lay["name"] for lay in REPORT_LAYOUTS}
    for name, figures in by_layout.items():
        assert figures["sent"] == statuses[(name, "sent")] > 0 or name == "lembrete-vencimento"
        assert figures["failed"] == (
            statuses[(name, "failed_temporary")] + statuses[(name, "failed_permanent")]
        )
        assert figures["print_needed"] == statuses[(name, "print_needed")]
        assert figures["printed"] == statuses[(name, "printed")]
        assert figures["skipped"] == statuses[(name, "skipped")]
        assert figures["ambiguous"] == statuses[(name, "ambiguous")]
        assert figures["letters"] == sum(v for (lay, _), v in statuses.items() if lay == name)
    assert data["total"]["sent"] == statuses_total(statuses, "sent")
    # Outside the period, nothing; one layout only, only it.
    before = AS_OF - timedelta(days=1)
    _, output = _report(config, "--from", str(before), "--to", str(before), "--format", "json")
    assert json.loads(output)["total"]["letters"] == 0
    only = _json(config, "--layout", "atrasados")
    assert [f["layout"] for f in only["layouts"]] == ["atrasados"]


def statuses_total(statuses: Counter[tuple[str, str]], status: str) -> int:
    return sum(v for (_, s), v in statuses.items() if s == status)


def test_recnos_are_read_in_chunks(
    config: Config, letters: list[LetterRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _pay(config, letters)
    monkeypatch.setattr(report_module, "RECNO_CHUNK", 2)
    queries: list[int] = []
    real = report_module._chunks

    def spy(items: Any, size: int) -> Any:
        for batch in real(items, size):
            queries.append(len({item.recno for item in batch}))
            yield batch

    monkeypatch.setattr(report_module, "_chunks", spy)
    total = _json(config)["total"]
    assert max(queries) == 2 and len(queries) > 2
    assert total["paid_within"]["30"] == sum(v for (_, n), v in expected.items() if n == 30)


def _responses_table(config: Config, kind: str, customer: tuple[str, str]) -> None:
    """Record a response: in the history's own table, or one of the documented shape."""
    engine = create_engine(config.history.engine_url())
    if inspect(engine).has_table("cobranca_responses"):
        responses = Table("cobranca_responses", MetaData(), autoload_with=engine)
    else:
        metadata = MetaData()
        responses = Table(
            "cobranca_responses",
            metadata,
            Column("id", Integer, primary_key=True),
            Column("customer_code", String(16)),
            Column("customer_store", String(8)),
            Column("title_key", String(80)),
            Column("kind", String(32)),
            Column("created_at", DateTime(timezone=True)),
        )
        metadata.create_all(engine)
    row = {"customer_code": customer[0], "customer_store": customer[1], "title_key": None,
           "kind": kind, "created_at": datetime.now(UTC), "operator": "teste", "note": "",
           "proof": "", "closed_by": "", "close_note": ""}  # fmt: skip
    with engine.begin() as connection:
        connection.execute(responses.insert(), [{k: v for k, v in row.items() if k in responses.c}])
    engine.dispose()


def test_works_without_responses_table(config: Config, letters: list[LetterRecord]) -> None:
    engine = create_engine(config.history.engine_url())
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS cobranca_responses"))
    engine.dispose()
    data = _json(config)
    assert data["responses_available"] is False
    assert {f["responses"] for f in data["layouts"]} == {None}
    assert data["total"]["sent"] > 0


def test_responses_counted_when_recorded(config: Config, letters: list[LetterRecord]) -> None:
    letter = next(x for x in letters if x.status == LetterStatus.SENT)
    _responses_table(config, "promessa", (letter.customer_code, letter.customer_store))
    data = _json(config)
    assert data["responses_available"] is True
    by_layout = {f["layout"]: f["responses"] for f in data["layouts"]}
    wrote = {
        x.layout
        for x in letters
        if x.status == LetterStatus.SENT
        and (x.customer_code, x.customer_store) == (letter.customer_code, letter.customer_store)
    }
    assert by_layout == {lay["name"]: int(lay["name"] in wrote) for lay in REPORT_LAYOUTS}
    assert data["total"]["responses"] == 1
    assert data["responses_by_kind"] == {"promessa": 1}


def test_table_output_is_aligned(config: Config, letters: list[LetterRecord]) -> None:
    _pay(config, letters)
    code, output = _report(config, "--from", str(AS_OF), "--to", str(AS_OF))
    assert code == 0
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Layout"))
    rule = lines[header + 1]
    # Every row of the first table ends its columns where the rule's dashes end.
    ends = [m.end() for m in re.finditer(r"-+", rule)]
    for line in lines[header + 2 : header + 2 + len(REPORT_LAYOUTS)]:
        for end in ends[1:]:
            assert line[end - 1] != " ", (line, end)
    assert "R$ " in output and "," in output
    assert "E1_BAIXA" in output  # the rule is explained


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_is_self_contained_and_opens(config: Config, letters: list[LetterRecord]) -> None:
    _pay(config, letters)
    letter = next(x for x in letters if x.status == LetterStatus.SENT)
    _responses_table(config, HOSTILE_KIND, (letter.customer_code, letter.customer_store))
    html_path = Path(tempfile.mkdtemp(prefix="cobranca-report-")) / "relatorio.html"
    code, _ = _report(config, "--from", str(AS_OF), "--to", str(AS_OF), "--html", str(html_path))
    assert code == 0
    html = html_path.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    assert not re.search(r"https?://", html)
    assert not re.search(r"""(src|href)\s*=\s*["']?(//|[a-z]+:)""", html, re.I)
    assert HOSTILE_KIND not in html and "&lt;img src=x" in html
    assert html.count("<svg") == 2 and "Pagos em até 7 dias" in html
    assert "E1_BAIXA" in html  # the footer explains the rule

    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true requires chromium (apt-get install -y chromium)")
        pytest.skip("chromium is not installed")
    shot = Path(tempfile.gettempdir()) / "cobranca-report.png"
    shot.unlink(missing_ok=True)
    profile = tempfile.mkdtemp(prefix="cobranca-chromium-")
    try:
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--window-size=1200,2600", f"--screenshot={shot}", html_path.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert shot.exists() and shot.stat().st_size > 10_000
    page_errors = [
        line for line in done.stderr.splitlines()
        if "CONSOLE" in line or "Failed to load resource" in line or "net::ERR" in line
    ]  # fmt: skip
    assert not page_errors, page_errors
