"""Customer responses change what the daemon does: promises hold and then release, disputes
hold only their títulos, and every response is in the audit chain."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cobranca.audit import verify
from cobranca.cli import main
from cobranca.config import load_config
from cobranca.history import HistoryStore
from cobranca.runner import run_layouts
from cobranca.source import ProtheusSource
from conftest import AS_OF, SmtpServer, config_data, write_config

DAILY = [
    {
        "name": "cobranca-diaria",
        "schedule": "0 9 * * *",
        "template": "primeiro-aviso",
        "subject": "Aviso – {{ customer.name }}",
        "selection": {"days": {"min": 1}},
        "cadence_days": 1,
    }
]


@pytest.fixture
def setup(demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path) -> tuple[Path, Any]:
    data = config_data(source_url=demo_sqlite, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                       smtp=smtp_server, layouts=DAILY)  # fmt: skip
    data["responses"] = {"promise_grace_days": 3}
    path = write_config(tmp_path / "c.yaml", data)
    config = load_config(path)
    source = ProtheusSource(config.source)
    try:
        groups = list(source.customers_titles(config.layout("cobranca-diaria").selection, AS_OF))
    finally:
        source.close()
    group = next(g for g in groups if len(g.titles) >= 2 and g.customer.raw_emails.count("@") == 1)
    return path, group


def _mails_to(smtp: SmtpServer, address: str) -> list[Any]:
    return [m for m in smtp.received if address in str(m.message["To"])]


def cli(*argv: str) -> int:
    return main([*argv, "--log-level", "WARNING"])


def test_promise_holds_letters_until_its_date_plus_grace_then_is_broken(
    setup: tuple[Path, Any], smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path, group = setup
    customer, email = group.customer, group.customer.raw_emails.strip().lower()
    promised = AS_OF + timedelta(days=5)
    assert cli("response", "add", "--customer", customer.key, "--kind", "promise",
               "--amount", "1500.00", "--date", promised.isoformat(), "--operator", "ana",
               "--config", str(path)) == 0  # fmt: skip
    config = load_config(path)
    for day in (AS_OF, promised, promised + timedelta(days=3)):
        result = run_layouts(config, as_of=day).results[0]
        assert result.skipped["suspended_by_response"] >= 1, day
        assert _mails_to(smtp_server, email) == [], day
        assert result.sent > 0  # the others still get theirs
    capsys.readouterr()
    # The day after date + grace: the promise is broken and the ladder resumes.
    resumed = promised + timedelta(days=4)
    run_layouts(config, as_of=resumed)
    assert len(_mails_to(smtp_server, email)) == 1
    for day, broken in ((promised + timedelta(days=3), 0), (resumed, 1)):
        assert main(["response", "list", "--broken", "--as-of", day.isoformat(),
                     "--config", str(path)]) == 0  # fmt: skip
        out = capsys.readouterr().out
        assert f"{broken} broken promise(s)" in out and (customer.key in out) == bool(broken)


def test_dispute_holds_only_its_titulo_until_closed(
    setup: tuple[Path, Any], smtp_server: SmtpServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path, group = setup
    disputed, other = group.titles[0], group.titles[1]
    email = group.customer.raw_emails.strip().lower()
    assert cli("response", "add", "--customer", group.customer.key, "--kind", "dispute",
               "--title", disputed.key, "--note", "mercadoria devolvida",
               "--config", str(path)) == 0  # fmt: skip
    response_id = capsys.readouterr().out.split()[1]
    config = load_config(path)
    run_layouts(config, as_of=AS_OF)
    assert len(_mails_to(smtp_server, email)) == 1
    assert _keys(path, group, AS_OF) == {t.key for t in group.titles} - {disputed.key}
    assert other.key in _keys(path, group, AS_OF)
    assert cli("response", "close", response_id, "--note", "resolvido",
               "--config", str(path)) == 0  # fmt: skip
    run_layouts(config, as_of=AS_OF + timedelta(days=1))
    assert len(_mails_to(smtp_server, email)) == 2
    assert disputed.key in _keys(path, group, AS_OF + timedelta(days=1))


def _keys(path: Path, group: Any, day: Any) -> set[str]:
    history = HistoryStore(load_config(path).history.engine_url())
    try:
        (letter,) = [
            r for r in history.letters()
            if r.customer_code == group.customer.code and r.as_of == day
        ]  # fmt: skip
        return {t.title_key for t in letter.titles}
    finally:
        history.close()


def test_responses_are_in_the_audit_chain(setup: tuple[Path, Any]) -> None:
    path, group = setup
    assert cli("response", "add", "--customer", group.customer.key, "--kind",
               "phone_contact", "--note", "ligou", "--config", str(path)) == 0  # fmt: skip
    history = HistoryStore(load_config(path).history.engine_url())
    try:
        result = verify(history)
        (response,) = history.responses()
    finally:
        history.close()
    assert result.ok and result.events == 1 and response.kind == "phone_contact"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--kind", "promise"), "a promise needs --date and --amount"),
        (("--kind", "dispute"), "a dispute needs --note"),
        (("--kind", "phone_contact", "--title", "01|NF|1||NF|999999|01"), "is not customer"),
    ],
)
def test_bad_responses_are_refused(
    setup: tuple[Path, Any], capsys: pytest.CaptureFixture[str], extra: tuple[str, ...],
    message: str,
) -> None:  # fmt: skip
    path, group = setup
    assert cli("response", "add", "--customer", group.customer.key, *extra,
               "--config", str(path)) == 2  # fmt: skip
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("transport", ["smtp", "outbox"])
def test_response_recorded_after_the_plan_holds_the_letter_still_planned(
    transport: str, demo_sqlite: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    """A promise taken on the phone after the plan, before the letter went: delivery reads
    the responses of the customers it is about to send to (one per claim over SMTP, a batch
    through the outbox) and holds that customer's letter; the others go."""
    data = config_data(source_url=demo_sqlite, history_url=f"sqlite:///{tmp_path / 'h.db'}",
                       smtp=smtp_server if transport == "smtp" else None,
                       outbox=tmp_path / "outbox", layouts=DAILY)  # fmt: skip
    data["delivery"]["max_letters_per_run"] = 1  # plan every letter, send one
    capped = write_config(tmp_path / "capped.yaml", data)
    del data["delivery"]["max_letters_per_run"]
    path = write_config(tmp_path / "c.yaml", data)
    assert run_layouts(load_config(capped), as_of=AS_OF).results[0].sent == 1
    history = HistoryStore(load_config(path).history.engine_url())
    try:
        waiting = [r for r in history.letters() if r.status == "planned" and r.recipients]
        held, other = waiting[1], waiting[-1]
        assert len(waiting) > 2
        who = f"{held.customer_code}/{held.customer_store}"
        assert cli("response", "add", "--customer", who, "--kind", "promise",
                   "--amount", "100.00", "--date", (AS_OF + timedelta(days=5)).isoformat(),
                   "--operator", "ana", "--config", str(path)) == 0  # fmt: skip

        result = run_layouts(load_config(path), as_of=AS_OF).results[0]

        assert result.sent == len(waiting) - 1
        after = {r.id: r for r in history.letters()}
    finally:
        history.close()
    assert after[held.id].status == "skipped" and "suspended_by_response" in after[held.id].reason
    assert after[other.id].status == "sent"
