"""Business days, the send window, and cron triggers moved onto them (no sleeping, no mocks)."""

from __future__ import annotations

import queue
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger

from cobranca.businessdays import (
    CARNIVAL,
    EXTRA_HOLIDAY,
    BusinessCalendar,
    BusinessDayTrigger,
    SendPolicy,
    SendWindow,
    carnival_days,
    easter,
    first_fire_on,
)
from cobranca.cron import parse_cron

SP = ZoneInfo("America/Sao_Paulo")
NATIONAL = BusinessCalendar()
SAO_PAULO = BusinessCalendar(state="SP")
OFFICE_HOURS = SendWindow(time(8), time(18))
POLICY = SendPolicy(SAO_PAULO, window=OFFICE_HOURS)


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=SP)


def fire_times(trigger: BaseTrigger, now: datetime, count: int) -> list[datetime]:
    """What the scheduler would get: each call is given the previous (moved) fire time."""
    times: list[datetime] = []
    previous = None
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        times.append(fire)
        previous = now = fire
    return times


def daily(expression: str, policy: SendPolicy = POLICY) -> BusinessDayTrigger:
    return BusinessDayTrigger(parse_cron(expression, SP), policy)


# --- calendar -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "name"),
    [
        (date(2026, 12, 25), "Natal"),
        (date(2026, 1, 1), "Confraternização Universal"),
        (date(2026, 11, 2), "Finados"),
        (date(2026, 4, 3), "Sexta-feira Santa"),
    ],
)
def test_national_holidays_are_named_in_portuguese(day: date, name: str) -> None:
    assert NATIONAL.holiday_name(day) == name
    assert not NATIONAL.is_business_day(day)


def test_black_awareness_day_is_national_since_2024() -> None:
    name = NATIONAL.holiday_name(date(2026, 11, 20))
    assert name is not None and "Consciência Negra" in name


def test_state_holidays_apply_only_in_their_state() -> None:
    assert SAO_PAULO.holiday_name(date(2026, 7, 9)) == "Revolução Constitucionalista"
    assert BusinessCalendar(state="RJ").holiday_name(date(2026, 4, 23)) == "São Jorge"
    assert BusinessCalendar(state="RJ").is_business_day(date(2026, 7, 9))  # a Thursday
    assert NATIONAL.is_business_day(date(2026, 7, 9))
    assert SAO_PAULO.is_business_day(date(2026, 4, 23))  # a Thursday


def test_state_is_checked_and_normalised() -> None:
    assert BusinessCalendar(state=" sp ").state == "SP"
    with pytest.raises(ValueError, match="not a Brazilian UF"):
        BusinessCalendar(state="XX")


@pytest.mark.parametrize("year", [2025, 2026])
def test_carnival_monday_and_tuesday_are_closed_ash_wednesday_is_not(year: int) -> None:
    monday, tuesday = carnival_days(year)
    expected = {
        2025: (date(2025, 3, 3), date(2025, 3, 4)),
        2026: (date(2026, 2, 16), date(2026, 2, 17)),
    }
    assert (monday, tuesday) == expected[year]
    assert SAO_PAULO.holiday_name(monday) == CARNIVAL
    assert SAO_PAULO.holiday_name(tuesday) == CARNIVAL
    assert SAO_PAULO.is_business_day(tuesday + timedelta(days=1))  # Quarta-feira de Cinzas
    no_carnival = BusinessCalendar(state="SP", carnival=False)
    assert no_carnival.is_business_day(monday) and no_carnival.is_business_day(tuesday)


def test_easter_matches_dateutil() -> None:
    reference = pytest.importorskip("dateutil.easter")
    assert all(easter(year) == reference.easter(year) for year in range(1900, 2200))


def test_christmas_eve_is_a_business_day() -> None:
    # Banks close at noon, but it is no public holiday: letters go out in the morning.
    assert SAO_PAULO.is_business_day(date(2026, 12, 24))
    assert SAO_PAULO.is_business_day(date(2026, 12, 31))


def test_weekends_and_extra_holidays() -> None:
    assert NATIONAL.holiday_name(date(2026, 12, 26)) == "Saturday"
    assert NATIONAL.holiday_name(date(2026, 12, 27)) == "Sunday"
    assert NATIONAL.holiday_name(date(2026, 12, 28)) is None
    # Holiday names win over the weekday: Christmas 2027 is a Saturday.
    assert NATIONAL.holiday_name(date(2027, 12, 25)) == "Natal"
    closures = BusinessCalendar(state="SP", extra_holidays=[date(2027, 1, 25), date(2026, 12, 31)])
    assert isinstance(closures.extra_holidays, frozenset)
    assert closures.holiday_name(date(2027, 1, 25)) == EXTRA_HOLIDAY  # aniversário de São Paulo
    assert closures.next_business_day(date(2026, 12, 31)) == date(2027, 1, 4)
    assert hash(SendPolicy(closures)) == hash(SendPolicy(closures))  # frozen, usable as a key


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 11, 20), date(2026, 11, 23)),  # Consciência Negra on a Friday
        (date(2026, 12, 25), date(2026, 12, 28)),  # Christmas on a Friday
        (date(2026, 2, 14), date(2026, 2, 18)),  # Carnival Saturday to Ash Wednesday
        (date(2026, 12, 23), date(2026, 12, 23)),  # a business day is its own
    ],
)
def test_next_business_day(day: date, expected: date) -> None:
    assert SAO_PAULO.next_business_day(day) == expected


# --- window and policy ----------------------------------------------------------------------


def test_send_window_is_checked() -> None:
    with pytest.raises(ValueError, match="must be after its start"):
        SendWindow(time(18), time(8))
    with pytest.raises(ValueError, match="must be after its start"):
        SendWindow(time(8), time(8))
    with pytest.raises(ValueError, match="without a zone"):
        SendWindow(time(8, tzinfo=SP), time(18))
    assert str(OFFICE_HOURS) == "08:00–18:00"
    assert str(SendWindow(time(7, 30))) == "07:30–24:00"


@pytest.mark.parametrize(
    ("now", "why"),
    [
        (at(2026, 12, 25, 10), "2026-12-25 is a holiday (Natal)"),
        (at(2026, 12, 26, 10), "2026-12-26 is a Saturday"),
        (at(2026, 2, 16, 10), "2026-02-16 is a holiday (Carnaval)"),
        (at(2026, 12, 28, 7, 59), "07:59 is outside the send window 08:00–18:00"),
        (at(2026, 12, 28, 18), "18:00 is outside the send window 08:00–18:00"),
        (at(2026, 12, 28, 8), None),
        (at(2026, 12, 28, 17, 59), None),
    ],
)
def test_refusal_says_why(now: datetime, why: str | None) -> None:
    assert POLICY.refusal(now) == why
    assert POLICY.allows(now) is (why is None)


def test_business_days_can_be_switched_off_but_the_window_stays() -> None:
    every_day = SendPolicy(SAO_PAULO, business_days_only=False, window=OFFICE_HOURS)
    assert every_day.refusal(at(2026, 12, 25, 10)) is None
    assert every_day.refusal(at(2026, 12, 25, 20)) == "20:00 is outside the send window 08:00–18:00"
    assert every_day.next_allowed(at(2026, 12, 26, 20)) == at(2026, 12, 27, 8)
    anytime = SendPolicy(SAO_PAULO, business_days_only=False)
    assert anytime.refusal(at(2026, 12, 25, 3)) is None
    assert anytime.next_allowed(at(2026, 12, 25, 3)) == at(2026, 12, 25, 3)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(2026, 12, 28, 6), at(2026, 12, 28, 8)),  # before the window: its start, same day
        (at(2026, 12, 28, 10, 17), at(2026, 12, 28, 10, 17)),  # inside: unchanged
        (at(2026, 12, 28, 18), at(2026, 12, 29, 8)),  # the end is exclusive
        (at(2026, 12, 24, 20), at(2026, 12, 28, 8)),  # Christmas and the weekend
        (at(2026, 11, 19, 22), at(2026, 11, 23, 8)),  # Consciência Negra, then the weekend
        (at(2026, 2, 13, 19), at(2026, 2, 18, 8)),  # Carnival
        (at(2026, 7, 9, 9), at(2026, 7, 10, 8)),  # SP state holiday
    ],
)
def test_next_allowed(moment: datetime, expected: datetime) -> None:
    result = POLICY.next_allowed(moment)
    assert result == expected
    assert result.tzinfo is moment.tzinfo


def test_next_allowed_without_window_or_with_open_end() -> None:
    business_days = SendPolicy(SAO_PAULO)
    assert business_days.next_allowed(at(2026, 12, 26, 10)) == at(2026, 12, 28)
    assert business_days.next_allowed(at(2026, 12, 28, 23, 59)) == at(2026, 12, 28, 23, 59)
    evenings = SendPolicy(SAO_PAULO, window=SendWindow(time(8)))
    assert evenings.refusal(at(2026, 12, 28, 23, 59)) is None
    assert evenings.next_allowed(at(2026, 12, 28, 2)) == at(2026, 12, 28, 8)


def test_daily_trigger_skips_christmas_and_weekend_with_one_run_after() -> None:
    times = fire_times(daily("0 8 * * *"), at(2026, 12, 18, 9), 6)  # Friday, after 08:00
    assert times == [
        at(2026, 12, 21, 8),
        at(2026, 12, 22, 8),
        at(2026, 12, 23, 8),
        at(2026, 12, 24, 8),
        at(2026, 12, 28, 8),  # Friday 25th, Saturday and Sunday collapse into one run
        at(2026, 12, 29, 8),
    ]


def test_daily_trigger_across_carnival() -> None:
    times = fire_times(daily("0 8 * * *"), at(2026, 2, 12, 9), 3)
    assert times == [at(2026, 2, 13, 8), at(2026, 2, 18, 8), at(2026, 2, 19, 8)]


def test_monthly_trigger_on_a_sunday_followed_by_a_holiday() -> None:
    # 2026-11-01 is a Sunday and Monday the 2nd is Finados.
    times = fire_times(daily("0 8 1 * *"), at(2026, 10, 15), 3)
    assert times == [at(2026, 11, 3, 8), at(2026, 12, 1, 8), at(2027, 1, 4, 8)]


def test_sunday_only_cron_runs_on_mondays() -> None:
    times = fire_times(daily("0 8 * * 0"), at(2026, 12, 1), 4)
    assert times == [
        at(2026, 12, 7, 8),
        at(2026, 12, 14, 8),
        at(2026, 12, 21, 8),
        at(2026, 12, 28, 8),
    ]


def test_night_cron_runs_next_business_morning_once_a_day() -> None:
    times = fire_times(daily("0 20 * * *"), at(2026, 12, 23, 9), 4)
    assert times == [
        at(2026, 12, 24, 8),
        at(2026, 12, 28, 8),
        at(2026, 12, 29, 8),
        at(2026, 12, 30, 8),
    ]


def test_first_fire_includes_the_one_moved_from_last_night() -> None:
    trigger = daily("0 20 * * *")
    # Started Tuesday 07:00: Monday 20:00 was too late, so Tuesday 08:00 is due.
    assert trigger.get_next_fire_time(None, at(2026, 12, 1, 7)) == at(2026, 12, 1, 8)
    assert trigger.get_next_fire_time(None, at(2026, 12, 26, 12)) == at(2026, 12, 28, 8)
    # The run that just fired is not repeated, whatever the clock says.
    monday = at(2026, 12, 28, 8)
    assert trigger.get_next_fire_time(monday, monday) == at(2026, 12, 29, 8)
    assert trigger.get_next_fire_time(monday, at(2026, 12, 27, 12)) == at(2026, 12, 29, 8)


def test_frequent_cron_stops_at_the_window_end_and_resumes_once() -> None:
    times = fire_times(daily("*/30 * * * *"), at(2026, 12, 24, 17), 5)
    assert times == [
        at(2026, 12, 24, 17),
        at(2026, 12, 24, 17, 30),
        at(2026, 12, 28, 8),
        at(2026, 12, 28, 8, 30),
        at(2026, 12, 28, 9),
    ]


def test_trigger_with_business_days_off_keeps_only_the_window() -> None:
    policy = SendPolicy(SAO_PAULO, business_days_only=False, window=OFFICE_HOURS)
    times = fire_times(daily("0 20 * * *", policy), at(2026, 12, 24, 9), 3)
    assert times == [at(2026, 12, 25, 8), at(2026, 12, 26, 8), at(2026, 12, 27, 8)]


def test_trigger_wraps_a_one_off_trigger_and_ends() -> None:
    trigger = BusinessDayTrigger(DateTrigger(run_date=at(2026, 12, 26, 10)), POLICY, SP)
    first = trigger.get_next_fire_time(None, at(2026, 12, 20))
    assert first == at(2026, 12, 28, 10)  # Saturday 10:00 → Monday 10:00
    assert trigger.get_next_fire_time(first, first) is None


def test_trigger_needs_a_timezone() -> None:
    with pytest.raises(ValueError, match="timezone"):
        BusinessDayTrigger(DateTrigger(run_date=at(2026, 12, 26, 10)), POLICY)


def test_trigger_describes_itself() -> None:
    trigger = daily("0 8 * * *")
    assert str(trigger).endswith("within business days, 08:00–18:00")
    assert "BusinessDayTrigger" in repr(trigger) and "CronTrigger" in repr(trigger)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 12, 28), at(2026, 12, 28, 8)),  # Thursday night's run, moved to Monday
        (date(2026, 12, 29), at(2026, 12, 29, 8)),  # Monday night's
        (date(2026, 12, 26), None),  # Saturday
        (date(2026, 12, 25), None),  # Natal
    ],
)
def test_first_fire_on_finds_moved_runs(day: date, expected: datetime | None) -> None:
    assert first_fire_on(daily("0 20 * * *"), day) == expected


def test_first_fire_on_days_without_a_fire() -> None:
    monthly = daily("0 8 1 * *")
    assert first_fire_on(monthly, date(2026, 11, 2)) is None  # Finados
    assert first_fire_on(monthly, date(2026, 11, 3)) == at(2026, 11, 3, 8)
    assert first_fire_on(monthly, date(2026, 11, 4)) is None
    # A weekend fire time keeps its time of day on the next business day...
    assert first_fire_on(daily("30 9 * * *"), date(2026, 12, 28)) == at(2026, 12, 28, 9, 30)
    # ...so layouts keep their order after a holiday: the reminder still goes first.
    assert first_fire_on(daily("0 8 * * *"), date(2026, 12, 28)) == at(2026, 12, 28, 8)
    # A fire time outside the window moves to the window's start.
    assert first_fire_on(daily("0 20 * * *"), date(2026, 12, 28)) == at(2026, 12, 28, 8)
    assert first_fire_on(daily("30 9 * * *"), date(2026, 12, 29)) == at(2026, 12, 29, 9, 30)


# --- the real scheduler ---------------------------------------------------------------------


def test_background_scheduler_fires_on_business_days_only() -> None:
    executed: queue.Queue[JobExecutionEvent] = queue.Queue()
    # Christmas Eve, a Thursday, before the 08:00 run.
    with time_machine.travel(at(2026, 12, 24, 7), tick=False) as clock:
        scheduler = BackgroundScheduler(timezone=SP, job_defaults={"misfire_grace_time": 60})
        scheduler.add_listener(executed.put, EVENT_JOB_EXECUTED)
        scheduler.start(paused=True)
        try:
            job = scheduler.add_job(lambda: None, trigger=daily("0 8 * * *"), id="letters")
            assert job.next_run_time == at(2026, 12, 24, 8)

            clock.move_to(at(2026, 12, 24, 8) + timedelta(seconds=1))
            scheduler.resume()
            assert executed.get(timeout=30).scheduled_run_time == at(2026, 12, 24, 8)

            # Monday after Christmas: the next run the scheduler itself asked the trigger for.
            clock.move_to(at(2026, 12, 28, 8) + timedelta(seconds=1))
            scheduler.wakeup()
            assert executed.get(timeout=30).scheduled_run_time == at(2026, 12, 28, 8)
        finally:
            scheduler.shutdown(wait=True)  # joins the scheduler thread: nothing else can run
        assert executed.empty()  # no second Monday run from the weekend's fire times
