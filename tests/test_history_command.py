"""`cobranca history`: the letters on record, listed and shown, against a real run's history.

The history is built by running the real job on the demo database with a real SMTP server; the
expected rows are read back from the database with plain SQL, so the command is checked against
the stored data, and `show --raw` against what the SMTP server actually received.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, inspect, text
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from cobranca.config import Config, load_config
from cobranca.history import HistoryStore
from cobranca.history_view import add_history_parser, history_command
from cobranca.render import money
from cobranca.runner import run_layouts
from conftest import (
    AS_OF,
    LAYOUTS,
    SmtpServer,
    config_data,
    insert_day_of_letters,
    sqlite_query_plan,
    write_config,
)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cobranca")
    add_history_parser(root.add_subparsers(dest="command", required=True), [])
    return root


class BytesOut(io.TextIOWrapper):
    """A text stream with a byte buffer, as sys.stdout is."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", newline="")

    def value(self) -> bytes:
        self.flush()
        return self.buffer.getvalue()  # type: ignore[attr-defined]


@dataclass
class Result:
    code: int
    out: str
    err: str
    data: bytes


@dataclass
class World:
    config: Config
    history_url: str
    smtp: SmtpServer

    def run(self, *argv: str) -> Result:
        args = parser().parse_args(["history", *argv])
        out, err = BytesOut(), io.StringIO()
        code = history_command(self.config, args, out=out, err=err)
        data = out.value()
        return Result(code, data.decode("utf-8"), err.getvalue(), data)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        engine = create_engine(self.history_url)
        with engine.connect() as connection:
            found = [dict(r._mapping) for r in connection.execute(text(sql), params)]
        engine.dispose()
        return found

    def ids(self, where: str = "1=1", **params: Any) -> list[int]:
        return [
            r["id"]
            for r in self.rows(
                f"SELECT id FROM cobranca_letters WHERE {where} ORDER BY id", **params
            )
        ]


@pytest.fixture
def world(demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path) -> World:
    history_url = f"sqlite:///{tmp_path / 'history.db'}"
    path = write_config(
        tmp_path / "cobranca.yaml",
        config_data(source_url=demo_sqlite, history_url=history_url, smtp=smtp_server),
    )
    config = load_config(path)
    run_layouts(config, as_of=AS_OF)
    # A second day, so the as-of filters and run filters have something to tell apart.
    run_layouts(config, [LAYOUTS[0]["name"]], as_of=AS_OF + timedelta(days=3))
    world = World(config, history_url, smtp_server)
    assert len(world.ids()) >= 4, "the demo run must record letters for these tests to mean much"
    assert len({r["as_of"] for r in world.rows("SELECT as_of FROM cobranca_letters")}) == 2
    return world


def table_ids(out: str) -> list[int]:
    """The letter ids of the table's rows (not the header, footer or response lines)."""
    rows = [line.split() for line in out.splitlines()[1:]]
    return [int(r[0]) for r in rows if len(r) > 1 and r[0].isdigit() and r[1][:2] == "20"]


def json_ids(out: str) -> list[int]:
    return [item["id"] for item in json.loads(out)]


# --- list -------------------------------------------------------------------------------------


def test_list_shows_every_letter_in_id_order(world: World) -> None:
    result = world.run()
    assert result.code == 0, result.err
    assert table_ids(result.out) == world.ids()
    assert result.out.rstrip().endswith(f"{len(world.ids())} letter(s)")
    assert table_ids(world.run("list").out) == world.ids()


def test_list_filters_by_customer(world: World) -> None:
    first = world.rows("SELECT customer_code, customer_store FROM cobranca_letters LIMIT 1")[0]
    code, store = first["customer_code"], first["customer_store"]
    expected = world.ids("customer_code = :c AND customer_store = :s", c=code, s=store)
    assert expected and expected != world.ids()
    assert json_ids(world.run("--customer", f"{code}/{store}", "--format", "json").out) == expected
    assert json_ids(world.run("--customer", code, "--format", "json").out) == world.ids(
        "customer_code = :c", c=code
    )
    assert json_ids(world.run("--customer", "NOSUCH", "--format", "json").out) == []


@pytest.mark.parametrize("customer", ["000700/01", "000700"])
def test_list_by_customer_reads_that_customers_letters_only(tmp_path: Path, customer: str) -> None:
    """Through the customer index, not by reading every letter: without it, the history of
    a 1M-título run (177,149 letters) took 3.8 s from a cold cache. No ANALYZE, as in a
    history that grew by itself."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    history = HistoryStore(url)
    try:
        insert_day_of_letters(history, 2_000)
    finally:
        history.close()
    data = config_data(source_url=f"sqlite:///{tmp_path / 'erp.db'}", history_url=url,
                       outbox=tmp_path / "outbox")  # fmt: skip
    config = load_config(write_config(tmp_path / "c.yaml", data))
    statements: list[tuple[str, Any]] = []

    def seen(_c: Any, _k: Any, sql: str, params: Any, *_: Any) -> None:
        statements.append((sql, params))

    sa_event.listen(Engine, "before_cursor_execute", seen)
    try:
        args = parser().parse_args(["history", "list", "--customer", customer, "--format", "json"])
        out = BytesOut()
        assert history_command(config, args, out=out, err=io.StringIO()) == 0
    finally:
        sa_event.remove(Engine, "before_cursor_execute", seen)
    assert [item["customer_code"] for item in json.loads(out.value())] == ["000700"]

    [(sql, params)] = [
        (sql, params) for sql, params in statements
        if sql.lstrip().startswith("SELECT cobranca_letters.id") and "customer_code =" in sql
    ]  # fmt: skip
    engine = create_engine(url)
    plan = sqlite_query_plan(engine, sql, params)
    engine.dispose()
    assert any(
        step.startswith("SEARCH cobranca_letters USING INDEX ix_letter_customer (customer_code=?")
        for step in plan
    ), plan
    assert not any(step.startswith("SCAN cobranca_letters") for step in plan), plan


def test_list_filters_by_layout_status_date_and_run(world: World) -> None:
    layout = LAYOUTS[1]["name"]
    expected = world.ids("layout = :l", l=layout)
    assert expected and expected != world.ids()
    assert json_ids(world.run("--layout", layout, "--format", "json").out) == expected

    statuses = {r["status"] for r in world.rows("SELECT status FROM cobranca_letters")}
    for status in statuses:
        got = json_ids(world.run("--status", status, "--format", "json").out)
        assert got == world.ids("status = :s", s=status)
    assert json_ids(world.run("--status", "ambiguous", "--format", "json").out) == world.ids(
        "status = 'ambiguous'"
    )

    later = (AS_OF + timedelta(days=3)).isoformat()  # the second day itself: bounds inclusive
    assert json_ids(world.run("--from", later, "--format", "json").out) == world.ids(
        "as_of >= :d", d=later
    )
    assert json_ids(world.run("--to", AS_OF.isoformat(), "--format", "json").out) == world.ids(
        "as_of <= :d", d=AS_OF.isoformat()
    )
    assert json_ids(world.run("--from", later, "--to", later, "--format", "json").out) == world.ids(
        "as_of = :d", d=later
    )
    gap = (AS_OF + timedelta(days=1)).isoformat(), (AS_OF + timedelta(days=2)).isoformat()
    assert json_ids(world.run("--from", gap[0], "--to", gap[1], "--format", "json").out) == []

    runs = [r["id"] for r in world.rows("SELECT id FROM cobranca_runs ORDER BY id")]
    some = [run for run in runs if world.ids("run_id = :r", r=run)]
    assert len(some) >= 2
    got = json_ids(world.run("--run", str(some[0]), "--format", "json").out)
    assert got == world.ids("run_id = :r", r=some[0])
    assert got != world.ids()


def test_list_filters_by_title_key(world: World) -> None:
    rows = world.rows(
        "SELECT title_key, letter_id FROM cobranca_letter_titles ORDER BY letter_id DESC"
    )
    key = rows[0]["title_key"]
    expected = sorted({r["letter_id"] for r in rows if r["title_key"] == key})
    assert expected != world.ids()
    assert json_ids(world.run("--title", key, "--format", "json").out) == expected
    assert table_ids(world.run("--title", key).out) == expected
    assert json_ids(world.run("--title", "no|such|key", "--format", "json").out) == []


def test_csv_and_json_match_the_database(world: World) -> None:
    letters = world.rows("SELECT * FROM cobranca_letters ORDER BY id")
    titles = world.rows("SELECT * FROM cobranca_letter_titles ORDER BY id")
    by_letter: dict[int, list[dict[str, Any]]] = {}
    for title in titles:
        by_letter.setdefault(title["letter_id"], []).append(title)

    result = world.run("--format", "csv")
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [int(r["id"]) for r in rows] == [r["id"] for r in letters]
    for row, db in zip(rows, letters, strict=True):
        for name in ("layout", "customer_code", "customer_store", "customer_name", "status",
                     "reason", "subject", "message_id", "recipients", "transport"):  # fmt: skip
            assert row[name] == db[name], name
        assert row["as_of"] == str(db["as_of"])
        assert int(row["run_id"]) == db["run_id"]
        assert Decimal(row["total"]) == Decimal(db["total"])
        assert row["title_keys"].split("; ") == [t["title_key"] for t in by_letter[db["id"]]]

    items = json.loads(world.run("--format", "json").out)
    assert [i["id"] for i in items] == [r["id"] for r in letters]
    for item, db in zip(items, letters, strict=True):
        assert (item["layout"], item["status"], item["message_id"], item["subject"]) == (
            db["layout"], db["status"], db["message_id"], db["subject"],
        )  # fmt: skip
        assert Decimal(item["total"]) == Decimal(db["total"])
        stored = by_letter[db["id"]]
        assert [t["title_key"] for t in item["titles"]] == [t["title_key"] for t in stored]
        assert [Decimal(t["balance"]) for t in item["titles"]] == [
            Decimal(t["balance"]) for t in stored
        ]
        assert [t["recno"] for t in item["titles"]] == [t["recno"] for t in stored]
        assert item["responses"] == []


def test_limit(world: World) -> None:
    everything = world.ids()
    result = world.run("--limit", "2")
    assert table_ids(result.out) == everything[:2]
    assert "the first 2" in result.out
    assert json_ids(world.run("--limit", "3", "--format", "json").out) == everything[:3]
    assert "the first" not in world.run().out  # fewer than the default 200


def test_bad_arguments_exit_2(world: World) -> None:
    for argv in (
        ("--status", "nonsense"),
        ("--customer", "/01"),
        ("--from", "2026-12-10", "--to", "2026-12-01"),
        ("show",),
        ("show", "1", "--layout", "x"),
        ("list", "--raw"),
    ):
        result = world.run(*argv)
        assert result.code == 2, argv
        assert result.err.startswith("cobranca history: "), argv
        assert result.out == "", argv
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["history", "--from", "04/12/2026"])
    assert exc.value.code == 2


# --- show -------------------------------------------------------------------------------------


def _sent_letter(world: World) -> dict[str, Any]:
    return world.rows("SELECT * FROM cobranca_letters WHERE status = 'sent' ORDER BY id")[0]


def test_show_prints_fields_titles_provenance_events_and_message(world: World) -> None:
    letter = _sent_letter(world)
    result = world.run("show", str(letter["id"]))
    assert result.code == 0, result.err
    out = result.out
    run = world.rows("SELECT * FROM cobranca_runs WHERE id = :r", r=letter["run_id"])[0]
    assert f"Letter {letter['id']}" in out
    assert run["config_digest"] in out
    assert letter["templates_digest"] and letter["templates_digest"] in out
    assert letter["server_reply"] and letter["server_reply"] in out
    rule = json.loads(letter["rule"])
    assert json.dumps(rule, indent=2, sort_keys=True, ensure_ascii=False).splitlines()[1] in out
    for title in world.rows(
        "SELECT * FROM cobranca_letter_titles WHERE letter_id = :i", i=letter["id"]
    ):
        assert title["title_key"] in out
        assert money(Decimal(title["balance"])) in out
    assert money(Decimal(letter["total"])) in out

    events = world.rows(
        "SELECT * FROM cobranca_events WHERE letter_id = :i ORDER BY seq", i=letter["id"]
    )
    assert [e["status"] for e in events][-1] == "sent" and len(events) >= 2
    positions = [out.index(f"#{e['seq']} ") for e in events]
    assert positions == sorted(positions)
    for event in events:
        at = datetime.fromisoformat(str(event["at"])).replace(tzinfo=UTC)
        local = at.astimezone(world.config.zone).strftime("%Y-%m-%d %H:%M:%S")
        line = next(line for line in out.splitlines() if f"#{event['seq']} " in line)
        assert local in line and event["status"] in line and event["actor"] in line

    received = _received(world, letter["message_id"])
    assert f"Message-ID: {letter['message_id']}" in out
    assert f"Subject: {received['Subject']}" in out
    assert received.get_body(preferencelist=("plain",)).get_content().strip() in out


def _received(world: World, message_id: str) -> Any:
    # A long Message-ID is folded onto its own line: compare it without the fold's space.
    found = [
        m.message for m in world.smtp.received if str(m.message["Message-ID"]).strip() == message_id
    ]
    assert len(found) == 1
    return found[0]


def test_show_raw_is_the_message_as_received(world: World) -> None:
    for letter in world.rows("SELECT * FROM cobranca_letters WHERE status = 'sent' LIMIT 3"):
        result = world.run("show", str(letter["id"]), "--raw")
        assert result.code == 0, result.err
        assert result.data == letter["raw_message"].encode("utf-8")
        mine = message_from_bytes(result.data, policy=policy.default)
        theirs = _received(world, letter["message_id"])
        assert mine["Message-ID"].strip() == theirs["Message-ID"].strip() == letter["message_id"]
        assert mine["Message-ID"] == theirs["Message-ID"]
        assert mine["Subject"] == theirs["Subject"] == letter["subject"]
        for kind in ("plain", "html"):
            ours, sent = mine.get_body((kind,)), theirs.get_body((kind,))
            assert sent is not None and ours is not None, kind
            assert ours.get_content() == sent.get_content(), kind


def test_show_unknown_letter_exits_2(world: World) -> None:
    missing = max(world.ids()) + 1000
    for argv in (("show", str(missing)), ("show", str(missing), "--raw")):
        result = world.run(*argv)
        assert result.code == 2
        assert f"no letter {missing}" in result.err
        assert result.out == ""


def test_no_history_database_is_an_empty_list(tmp_path: Path, demo_sqlite: str) -> None:
    path = write_config(
        tmp_path / "cobranca.yaml",
        config_data(
            source_url=demo_sqlite,
            history_url=f"sqlite:///{tmp_path / 'none' / 'history.db'}",
            outbox=tmp_path / "outbox",
        ),
    )
    world = World(load_config(path), "", None)  # type: ignore[arg-type]
    assert world.run().out.strip().endswith("0 letter(s)")
    assert json.loads(world.run("--format", "json").out) == []
    assert world.run("show", "1").code == 2
    assert not (tmp_path / "none").exists()  # read only: nothing created


# --- customer responses (another table, when it exists) ----------------------------------------


RESPONSES_DDL = (
    "CREATE TABLE cobranca_responses (id INTEGER PRIMARY KEY, customer_code VARCHAR(16), "
    "customer_store VARCHAR(8), title_key VARCHAR(80), kind VARCHAR(32), created_at DATETIME, "
    "operator VARCHAR(255), note TEXT, closed_at DATETIME)"
)


def _add_responses(url: str, rows: list[dict[str, Any]]) -> None:
    """Write responses as the responses feature would: into its table (made here if missing),
    with any other required column of that table given an empty value."""
    engine = create_engine(url)
    if not inspect(engine).has_table("cobranca_responses"):
        with engine.begin() as connection:
            connection.execute(text(RESPONSES_DDL))
    table = Table("cobranca_responses", MetaData(), autoload_with=engine)
    required = [c.name for c in table.columns if not c.nullable and not c.primary_key]
    with engine.begin() as connection:
        for row in rows:
            values = {name: "" for name in required} | {"operator": "ana", "closed_at": None}
            connection.execute(table.insert().values(**(values | row)))
    engine.dispose()


@pytest.mark.parametrize("table_first", [False, True], ids=["feature-table", "minimal-table"])
def test_responses_follow_their_letters(world: World, table_first: bool) -> None:
    if table_first:  # the minimal shape of the brief, whatever the store created
        engine = create_engine(world.history_url)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS cobranca_responses"))
            connection.execute(text(RESPONSES_DDL))
        engine.dispose()
    letter = _sent_letter(world)
    key = world.rows(
        "SELECT title_key FROM cobranca_letter_titles WHERE letter_id = :i", i=letter["id"]
    )[0]["title_key"]
    later = datetime.now(UTC) + timedelta(hours=1)
    earlier = datetime(2000, 1, 1, tzinfo=UTC)
    c, s = letter["customer_code"], letter["customer_store"]
    _add_responses(
        world.history_url,
        [
            dict(customer_code=c, customer_store=s, title_key=key, kind="promise",
                 created_at=later, note="pays fri"),
            dict(customer_code=c, customer_store=s, title_key=None, kind="dispute",
                 created_at=later, note="whole"),
            dict(customer_code=c, customer_store=s, title_key=None, kind="old",
                 created_at=earlier, note="before"),
            dict(customer_code=c, customer_store=s, title_key="x|y", kind="other",
                 created_at=later, note="nope"),
        ],
    )  # fmt: skip

    shown = world.run("show", str(letter["id"])).out
    assert "promise" in shown and "pays fri" in shown and "dispute" in shown
    assert "before" not in shown and "nope" not in shown

    table = world.run("--customer", f"{c}/{s}").out
    lines = table.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[0] == str(letter["id"]))
    assert "promise" in lines[at + 1] and "↳" in lines[at + 1]

    items = {i["id"]: i for i in json.loads(world.run("--format", "json").out)}
    kinds = [r["kind"] for r in items[letter["id"]]["responses"]]
    assert kinds == ["promise", "dispute"]
    others = [i for i in items.values() if i["customer_code"] != c]
    assert all(i["responses"] == [] for i in others)
    rows = list(csv.DictReader(io.StringIO(world.run("--format", "csv").out)))
    mine = next(r for r in rows if int(r["id"]) == letter["id"])
    assert mine["responses"].startswith("promise@") and "dispute@" in mine["responses"]


def test_without_responses_table(world: World) -> None:
    engine = create_engine(world.history_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS cobranca_responses"))
    engine.dispose()
    letter = _sent_letter(world)
    assert world.run("show", str(letter["id"])).code == 0
    items = json.loads(world.run("--format", "json").out)
    assert items and all(i["responses"] == [] for i in items)
