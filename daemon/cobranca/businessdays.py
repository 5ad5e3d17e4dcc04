"""When collection letters may go out: business days and a daily send window.

Letters go out on business days only (no weekends, national and state holidays from the
``holidays`` package, Carnival Monday and Tuesday as banks close, plus the company's own dates)
and, when configured, only inside a daytime window: the CDC (art. 71) forbids collection at
unreasonable hours. :class:`BusinessDayTrigger` wraps a layout's cron trigger so a fire time
that falls outside those limits moves to the next allowed instant; several fire times moved onto
the same instant collapse into one run.

Everything here works in wall-clock time of the datetimes given (the config's zone): "the 25th"
and "08:00" are São Paulo's, not UTC's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from types import MappingProxyType

import holidays
from apscheduler.triggers.base import BaseTrigger

__all__ = [
    "CARNIVAL",
    "EXTRA_HOLIDAY",
    "BusinessCalendar",
    "BusinessDayTrigger",
    "SendPolicy",
    "SendWindow",
    "carnival_days",
    "easter",
    "first_fire_on",
]

CARNIVAL = "Carnaval"
EXTRA_HOLIDAY = "holiday from config"
_WEEKEND = {5: "Saturday", 6: "Sunday"}
_ONE_DAY = timedelta(days=1)
_TICK = timedelta(microseconds=1)


def easter(year: int) -> date:
    """Gregorian Easter Sunday (Meeus/Jones/Butcher), so Carnival needs no optional category."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    g = (b - (b + 8) // 25 + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    weekday = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * weekday) // 451
    month, day = divmod(h + weekday - 7 * m + 114, 31)
    return date(year, month, day + 1)


def carnival_days(year: int) -> tuple[date, date]:
    """Carnival Monday and Tuesday (Easter − 48 and − 47 days): banks close, so do we.

    Computed here because ``holidays`` keeps them in an optional category whose contents vary
    between versions (and per state).
    """
    sunday = easter(year)
    return sunday - timedelta(days=48), sunday - timedelta(days=47)


@lru_cache(maxsize=64)
def _official_holidays(state: str | None, year: int) -> Mapping[date, str]:
    """National (and state) public holidays of one year, names in Portuguese, read-only.

    ``language`` is explicit: newer ``holidays`` otherwise follow the machine's locale.
    """
    table = holidays.country_holidays("BR", subdiv=state, years=year, language="pt_BR")
    return MappingProxyType(dict(table))


def _search_limit(extra: frozenset[date]) -> int:
    """Days to look for a business day: always enough (a year has ~250), never endless."""
    return 400 + len(extra)


@dataclass(frozen=True)
class BusinessCalendar:
    """Which days are business days: weekdays that are no holiday of Brazil, the UF or config."""

    state: str | None = None  # UF, e.g. "SP"; None = national holidays only
    extra_holidays: frozenset[date] = frozenset()  # municipal holidays, company closures
    carnival: bool = True

    def __post_init__(self) -> None:
        if self.state is not None:
            state = self.state.strip().upper()
            valid = sorted(s for s in holidays.BR.subdivisions if len(s) == 2)
            if state not in valid:
                raise ValueError(
                    f"state {self.state!r} is not a Brazilian UF; use one of {', '.join(valid)}"
                )
            object.__setattr__(self, "state", state)
        if not isinstance(self.extra_holidays, frozenset):
            object.__setattr__(self, "extra_holidays", frozenset(self.extra_holidays))

    def holiday_name(self, day: date) -> str | None:
        """Why ``day`` is not a business day ("Natal", "Carnaval", "Saturday"), None if it is."""
        name = _official_holidays(self.state, day.year).get(day)
        if name:
            return name
        if self.carnival and day in carnival_days(day.year):
            return CARNIVAL
        if day in self.extra_holidays:
            return EXTRA_HOLIDAY
        return _WEEKEND.get(day.weekday())

    def is_business_day(self, day: date) -> bool:
        return self.holiday_name(day) is None

    def next_business_day(self, day: date) -> date:
        """``day`` itself when it is a business day, else the first one after it."""
        for _ in range(_search_limit(self.extra_holidays)):
            if self.is_business_day(day):
                return day
            day += _ONE_DAY
        raise ValueError(f"no business day within a year after {day}")  # only with absurd config


@dataclass(frozen=True)
class SendWindow:
    """Daily hours when letters may go out: ``start`` inclusive, ``end`` exclusive.

    ``end`` None means until midnight.
    """

    start: time
    end: time | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or (self.end is not None and self.end.tzinfo is not None):
            raise ValueError("send window times are wall-clock times: give them without a zone")
        if self.end is not None and self.end <= self.start:
            raise ValueError(
                f"send window end {self.end:%H:%M} must be after its start {self.start:%H:%M} "
                "(windows across midnight are not supported)"
            )

    @property
    def whole_day(self) -> bool:
        return self.start == time() and self.end is None

    def __str__(self) -> str:
        end = "24:00" if self.end is None else f"{self.end:%H:%M}"
        return f"{self.start:%H:%M}–{end}"


@dataclass(frozen=True)
class SendPolicy:
    """When letters may go out: on business days (unless switched off), inside the window."""

    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)
    business_days_only: bool = True
    window: SendWindow | None = None

    def _window(self, day: date, zone: tzinfo | None) -> tuple[datetime, datetime]:
        """The window's interval [start, end) on ``day``; the whole day without a window."""
        window = self.window or SendWindow(time())
        start = datetime.combine(day, window.start, tzinfo=zone)
        if window.end is None:
            return start, datetime.combine(day + _ONE_DAY, time(), tzinfo=zone)
        return start, datetime.combine(day, window.end, tzinfo=zone)

    def _period(self, day: date, zone: tzinfo | None) -> tuple[datetime, datetime] | None:
        """The allowed interval [start, end) of ``day``, or None when nothing may go out."""
        if self.business_days_only and not self.calendar.is_business_day(day):
            return None
        return self._window(day, zone)

    @property
    def _always(self) -> bool:
        return not self.business_days_only and (self.window is None or self.window.whole_day)

    def _limit(self) -> int:
        return _search_limit(self.calendar.extra_holidays)

    def refusal(self, now: datetime) -> str | None:
        """Why letters may not go out at ``now`` (in the config's zone); None when they may."""
        day = now.date()
        if self.business_days_only:
            name = self.calendar.holiday_name(day)
            if name in _WEEKEND.values():
                return f"{day} is a {name}"
            if name is not None:
                return f"{day} is a holiday ({name})"
        if self.window is not None:
            start, end = self._window(day, now.tzinfo)
            if not start <= now < end:
                return f"{now:%H:%M} is outside the send window {self.window}"
        return None

    def allows(self, now: datetime) -> bool:
        return self.refusal(now) is None

    def next_allowed(self, moment: datetime) -> datetime:
        """The earliest instant at or after ``moment`` when letters may go out (same tzinfo)."""
        day = moment.date()
        for _ in range(self._limit()):
            period = self._period(day, moment.tzinfo)
            if period is not None and moment < period[1]:
                return max(moment, period[0])
            day += _ONE_DAY
        raise ValueError(f"no allowed sending time within a year after {moment}")

    def moved(self, fire: datetime) -> datetime:
        """Where a layout's fire time goes when letters may not leave then.

        Off a weekend or holiday: the same time of day on the next business day, so layouts
        keep the order finance gave them (the reminder at 08:00 before the notice at 09:00).
        Outside the window: the window's start, that day (too early) or the next allowed day
        (too late). An allowed fire time stays where it is.
        """
        if self.allows(fire):
            return fire
        day, clock = fire.date(), fire.time()
        inside = True
        if self.window is not None:
            start, end = self._window(day, fire.tzinfo)
            inside = start <= fire < end
            if fire >= end:
                day += _ONE_DAY
        if self.business_days_only:
            day = self.calendar.next_business_day(day)
        if not inside:
            assert self.window is not None
            clock = self.window.start
        return self.next_allowed(datetime.combine(day, clock, tzinfo=fire.tzinfo))

    def blocked_since(self, moment: datetime) -> datetime:
        """Where the blocked stretch leading up to ``moment`` began (``moment`` if none).

        Every instant from there on is moved to ``moment`` or later by :meth:`moved`,
        every earlier one to before ``moment``: so a trigger started there finds exactly the
        fire times that land at or after ``moment``, including those moved off a weekend,
        holiday or night.
        """
        if self._always:
            return moment
        day = moment.date()
        for _ in range(self._limit()):
            period = self._period(day, moment.tzinfo)
            if period is not None:
                start, end = period
                if start < moment < end:
                    return moment
                if end <= moment:
                    return end
            day -= _ONE_DAY
        raise ValueError(f"no allowed sending time within a year before {moment}")

    def __str__(self) -> str:
        parts = ["business days" if self.business_days_only else "every day"]
        if self.window is not None:
            parts.append(str(self.window))
        return ", ".join(parts)


class BusinessDayTrigger(BaseTrigger):
    """Wraps another trigger (a layout's CronTrigger): each fire time moves where
    :meth:`SendPolicy.moved` says; fire times moved onto the same instant fire once.

    Stateless on purpose: APScheduler hands back only the moved previous fire time. The next
    one is the first inner fire time whose moved time comes strictly after it, found by starting
    the inner trigger where the blocked stretch before that instant began: Saturday's and
    Sunday's 09:00 fire times both land on Monday 09:00 and fire once; nothing loops.
    """

    def __init__(self, inner: BaseTrigger, policy: SendPolicy, timezone: tzinfo | None = None):
        zone = timezone or getattr(inner, "timezone", None)
        if zone is None:
            raise ValueError("BusinessDayTrigger needs a timezone (the inner trigger has none)")
        self.inner = inner
        self.policy = policy
        self.timezone = zone

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # After a fire, strictly after it (not min(now, previous) as CronTrigger does): a clock
        # stepping back must not repeat a run. First time: the first moved fire time >= now.
        if previous_fire_time is not None:
            now = previous_fire_time.astimezone(UTC) + _TICK
        start = now.astimezone(self.timezone)
        raw = self.inner.get_next_fire_time(None, self.policy.blocked_since(start))
        if raw is None:
            return None
        fire = self.policy.moved(raw.astimezone(self.timezone))
        if previous_fire_time is not None and fire < start:
            return None  # an inner trigger that answers with a past time (DateTrigger) is done
        return fire

    def __str__(self) -> str:
        return f"{self.inner} within {self.policy}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} ({self.inner!r}, policy={self.policy!r})>"


def first_fire_on(trigger: BusinessDayTrigger, day: date) -> datetime | None:
    """The (moved) fire time that falls on ``day``, if any: what start-up catch-up looks for.

    Includes fire times moved onto ``day`` from the weekend, holidays or last night before it.
    """
    midnight = datetime.combine(day, time(), tzinfo=trigger.timezone)
    fire = trigger.get_next_fire_time(None, midnight)
    if fire is None or fire.date() != day:
        return None
    return fire
