"""`cobranca status` on a day made of several runs: retries and the passes of sharing daemons.

With two daemons, the one that does not hold the day's slot sends the holder's planned letters
too (a run with trigger "shared"). Its run record may come last and hold few or no letters: the
status sums the day, and a shared pass neither hides the holder's error nor looks like a day
that made no letter.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine

from cobranca.cli import main
from cobranca.config import Config, load_config
from cobranca.history import HistoryStore
from cobranca.status import layout_warnings
from conftest import offline_config_data, write_config

SP = ZoneInfo("America/Sao_Paulo")
DAY = date(2026, 12, 4)
NOW = datetime(2026, 12, 4, 9, 30, tzinfo=SP)  # after the 09:00 slot, within its grace
LAYOUT = "primeiro-aviso"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path / "c.yaml", offline_config_data(tmp_path)))


def _run(
    history: HistoryStore, as_of: date, trigger: str, status: str = "finished", error: str = "",
    **counts: int,
) -> None:  # fmt: skip
    run_id = history.start_run(LAYOUT, as_of, trigger, "digest")
    counts = {"sent": 0, "print_needed": 0, "failed": 0, "ambiguous": 0, "left_planned": 0,
              **counts}  # fmt: skip
    history.finish_run(run_id, status=status, counts=counts, skip_reasons={}, error=error)


def _status(config: Config, history: HistoryStore) -> tuple[str, list[str]]:
    summary, warnings = layout_warnings(config.layout(LAYOUT), config, history, NOW)
    return summary, [w for w in warnings if not w.startswith("did not run when due")]


def test_a_day_shared_by_two_daemons_is_summed_and_an_empty_shared_pass_is_no_warning(
    config: Config,
) -> None:
    history = HistoryStore(config.history.engine_url())
    try:
        _run(history, DAY - timedelta(days=1), "scheduled", sent=40)
        _run(history, DAY, "scheduled", sent=30, print_needed=2, failed=1)
        _run(history, DAY, "shared", sent=12)
        _run(history, DAY, "shared")  # the other daemon's last look: nothing left
        summary, warnings = _status(config, history)
    finally:
        history.close()
    assert summary.endswith("finished: 42 sent, 1 failed, 0 ambiguous (3 runs for 2026-12-04)")
    assert warnings == []  # 1 failed of 43 tried is below the share; the day made 44 letters


def test_a_day_with_no_letter_after_busy_days_is_a_warning_however_many_runs(
    config: Config,
) -> None:
    history = HistoryStore(config.history.engine_url())
    try:
        _run(history, DAY - timedelta(days=7), "scheduled", sent=1)  # long ago: not "usual"
        for back in (5, 4, 3, 2, 1):
            _run(history, DAY - timedelta(days=back), "scheduled", sent=40 + back)
        _run(history, DAY, "scheduled")
        _run(history, DAY, "shared")
        _, warnings = _status(config, history)
    finally:
        history.close()
    assert warnings == ["last run made no letter; the previous ones made 41+"]


def test_the_holders_error_is_not_hidden_by_a_later_shared_pass(config: Config) -> None:
    history = HistoryStore(config.history.engine_url())
    try:
        _run(history, DAY, "scheduled", status="failed", error="ERP unreachable", sent=5)
        _run(history, DAY, "shared", sent=3, failed=2, ambiguous=1)
        _, warnings = _status(config, history)
    finally:
        history.close()
    assert warnings == [
        "last run stopped on an error: ERP unreachable",
        "2 failed and 1 ambiguous of 11 letters",  # the day's, over both runs
    ]


def test_status_command_prints_the_days_sum(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    history = HistoryStore(config.history.engine_url())
    try:
        _run(history, DAY, "scheduled", sent=7)
        _run(history, DAY, "shared", sent=5)
    finally:
        history.close()
    with time_machine.travel(NOW, tick=False):
        main(["status", "--config", str(config.path)])
    out = capsys.readouterr().out
    assert f"{LAYOUT}: next " in out
    assert "12 sent, 0 failed, 0 ambiguous (2 runs for 2026-12-04)" in out
