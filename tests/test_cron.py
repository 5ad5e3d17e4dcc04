"""Cron expressions must fire as classic cron would, in the configured timezone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from cobranca.cron import CronError, describe_cron, parse_cron, split_cron

SP = ZoneInfo("America/Sao_Paulo")
# Monday 2025-03-03 00:00 in São Paulo; the week runs to Sunday 2025-03-09.
MONDAY = datetime(2025, 3, 3, tzinfo=SP)


def fire_times(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """All fire times in [start, end), by iterating get_next_fire_time like the scheduler."""
    times: list[datetime] = []
    now = start
    while True:
        fire = trigger.get_next_fire_time(times[-1] if times else None, now)
        if fire is None or fire >= end:
            return times
        times.append(fire)
        now = fire + timedelta(seconds=1)


def week(expression: str) -> list[datetime]:
    return fire_times(parse_cron(expression, SP), MONDAY, MONDAY + timedelta(days=7))


def weekdays(expression: str) -> list[str]:
    return [t.strftime("%a") for t in week(expression)]


def test_monday_to_friday_numbers() -> None:
    times = week("0 8 * * 1-5")
    assert [t.strftime("%a") for t in times] == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    assert {t.isoweekday() for t in times}.isdisjoint({6, 7})
    assert all((t.hour, t.minute, t.second) == (8, 0, 0) for t in times)


def test_apscheduler_from_crontab_differs() -> None:
    """The pitfall being avoided: APScheduler's own parser shifts weekdays by one."""
    trigger = CronTrigger.from_crontab("0 8 * * 1-5", timezone=SP)
    days = [t.strftime("%a") for t in fire_times(trigger, MONDAY, MONDAY + timedelta(days=7))]
    assert days == ["Tue", "Wed", "Thu", "Fri", "Sat"]


def test_fire_times_are_in_the_given_timezone() -> None:
    first = week("0 8 * * 1-5")[0]
    assert first.tzinfo is not None
    assert first.utcoffset() == timedelta(hours=-3)
    assert first.astimezone(UTC) == datetime(2025, 3, 3, 11, 0, tzinfo=UTC)
    assert first.astimezone(SP).hour == 8


@pytest.mark.parametrize("expression", ["0 8 * * 0", "0 8 * * 7", "0 8 * * sun", "0 8 * * SUN"])
def test_sunday_as_0_or_7(expression: str) -> None:
    times = week(expression)
    assert [t.strftime("%a %d %H:%M") for t in times] == ["Sun 09 08:00"]


def test_names_mon_fri() -> None:
    times = week("0 9 * * mon-fri")
    assert [t.strftime("%a %H:%M") for t in times] == [
        "Mon 09:00",
        "Tue 09:00",
        "Wed 09:00",
        "Thu 09:00",
        "Fri 09:00",
    ]


def test_names_any_case_and_lists() -> None:
    assert weekdays("0 9 * * Mon,WED,fri") == ["Mon", "Wed", "Fri"]
    assert weekdays("0 9 * * 1,3,5") == ["Mon", "Wed", "Fri"]


def test_every_15_minutes_during_business_hours() -> None:
    monday = fire_times(parse_cron("*/15 8-18 * * *", SP), MONDAY, MONDAY + timedelta(days=1))
    assert len(monday) == 11 * 4
    assert monday[0].strftime("%H:%M") == "08:00"
    assert monday[1].strftime("%H:%M") == "08:15"
    assert monday[-1].strftime("%H:%M") == "18:45"
    assert {t.minute for t in monday} == {0, 15, 30, 45}


@pytest.mark.parametrize("expression", ["0 8 * * fri-mon", "0 8 * * 5-1"])
def test_wrapping_range(expression: str) -> None:
    assert weekdays(expression) == ["Mon", "Fri", "Sat", "Sun"]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 8 * * */2", ["Tue", "Thu", "Sat", "Sun"]),  # 0,2,4,6
        ("0 8 * * 1-5/2", ["Mon", "Wed", "Fri"]),
        ("0 8 * * 0-7", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
        ("0 8 * * sat,7", ["Sat", "Sun"]),
    ],
)
def test_weekday_steps_and_lists(expression: str, expected: list[str]) -> None:
    assert weekdays(expression) == expected


def test_day_of_month_and_month_names() -> None:
    trigger = parse_cron("30 7 1,15 jan-mar *", SP)
    start = datetime(2025, 1, 1, tzinfo=SP)
    times = fire_times(trigger, start, datetime(2026, 1, 1, tzinfo=SP))
    assert [t.strftime("%d/%m %H:%M") for t in times] == [
        "01/01 07:30",
        "15/01 07:30",
        "01/02 07:30",
        "15/02 07:30",
        "01/03 07:30",
        "15/03 07:30",
    ]


@pytest.mark.parametrize(
    ("special", "equivalent"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_special_strings(special: str, equivalent: str) -> None:
    end = MONDAY + timedelta(days=40)
    assert fire_times(parse_cron(special, SP), MONDAY, end) == fire_times(
        parse_cron(equivalent, SP), MONDAY, end
    )


def test_weekly_is_sunday_midnight() -> None:
    assert [t.strftime("%a %H:%M") for t in week("@weekly")] == ["Sun 00:00"]


# --- errors ----------------------------------------------------------------------------------


def error(expression: str) -> str:
    with pytest.raises(CronError) as info:
        parse_cron(expression, SP)
    return str(info.value)


def test_four_fields() -> None:
    message = error("0 8 * *")
    assert "has 4 fields" in message
    assert "minute hour day-of-month month day-of-week" in message


def test_six_fields() -> None:
    assert "seconds and years are not supported" in error("0 0 8 * * *")


def test_hour_25() -> None:
    assert "hour '25' is out of range 0-23" in error("0 25 * * *")


def test_day_of_week_8() -> None:
    message = error("0 8 * * 8")
    assert "day-of-week '8' is out of range 0-7" in message
    assert "Sunday" in message


def test_day_of_month_and_day_of_week_both_restricted() -> None:
    message = error("0 8 1 * 1")
    assert "day-of-month '1' and day-of-week '1' are both restricted" in message
    assert "EITHER" in message
    assert "BOTH" in message


def test_garbage() -> None:
    assert "has 1 field;" in error("abc")


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("", "empty"),
        ("60 * * * *", "minute '60' is out of range 0-59"),
        ("0 8 0 * *", "day-of-month '0' is out of range 1-31"),
        ("0 8 * 13 *", "month '13' is out of range 1-12"),
        ("0 8 * * mon-xyz", "day-of-week 'xyz' is not valid"),
        ("0 8 L * *", "day-of-month 'L' is not valid"),
        ("0 8 ? * *", "day-of-month '?' is not valid"),
        ("0 8 * * 1-", "day-of-week '1-' is not valid"),
        ("0 18-8 * * *", "hour range '18-8' goes backwards"),
        ("*/0 8 * * *", "a step of 0 is not allowed"),
        ("0 8 31 feb *", "never occurs"),
        ("@yearly", "unknown cron shorthand '@yearly'"),
        ("0 h * * *", "hour 'h' is not valid"),
    ],
)
def test_other_errors(expression: str, fragment: str) -> None:
    assert fragment in error(expression)


def test_error_is_value_error_and_names_expression() -> None:
    with pytest.raises(ValueError, match=r"in cron expression '0 25 \* \* \*'"):
        parse_cron("0 25 * * *", SP)


def test_split_and_describe() -> None:
    fields = split_cron("0 8 * * fri-mon")
    assert fields.days_of_week == frozenset({5, 6, 0, 1})
    assert fields.days_of_month is None
    assert describe_cron("0 8 * * 1-5") == "at 08:00 on mon,tue,wed,thu,fri"
