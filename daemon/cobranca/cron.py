"""Classic crontab expressions turned into APScheduler 3 triggers, with cron's meaning.

Why not ``CronTrigger.from_crontab``: APScheduler 3 numbers weekdays from 0 = Monday, so
``0 8 * * 1-5`` would fire Tuesday to Saturday, and it ANDs day-of-month with day-of-week where
cron ORs them. Here every field is parsed and checked with cron's rules, then handed to
APScheduler as explicit values (weekdays as names ``mon,tue,...``), so nothing is ambiguous and
every mistake becomes a :class:`CronError` that says what to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

__all__ = [
    "SPECIAL_EXPRESSIONS",
    "CronError",
    "CronFields",
    "describe_cron",
    "parse_cron",
    "split_cron",
]

FORMAT_HELP = (
    "write 5 fields: minute hour day-of-month month day-of-week, "
    "e.g. '0 8 * * 1-5' (08:00 Monday to Friday) or '30 7 1 * *' (07:30 on the 1st)"
)

#: Shorthands accepted in place of five fields.
SPECIAL_EXPRESSIONS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
}

_DOW_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # cron numbering: 0 = Sunday
_APS_DOW = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # APScheduler order: 0 = Monday
_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_MONTH_DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # most days each month can have

_ITEM_RE = re.compile(
    r"(?P<start>\*|[0-9a-z]+)(?:-(?P<end>[0-9a-z]+))?(?:/(?P<step>[0-9]+))?\Z", re.IGNORECASE
)


class CronError(ValueError):
    """A cron expression is invalid; the message names the field and value and how to fix it."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]
    hint: str = ""
    star_high: int | None = None  # last value of '*' and 'a/n' when not ``high``


_MINUTE = _Field("minute", 0, 59, {})
_HOUR = _Field("hour", 0, 23, {})
_DOM = _Field("day-of-month", 1, 31, {})
_MONTH = _Field("month", 1, 12, {n: i for i, n in enumerate(_MONTH_NAMES, 1)}, " or jan-dec")
_DOW = _Field(
    "day-of-week",
    0,
    7,
    {n: i for i, n in enumerate(_DOW_NAMES)},
    " (0 and 7 are Sunday, 1 is Monday) or sun-sat",
    star_high=6,
)


@dataclass(frozen=True)
class CronFields:
    """The explicit value sets of a parsed expression, in cron's numbering."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None  # None: "*"
    months: frozenset[int]
    days_of_week: frozenset[int] | None  # None: "*"; 0 = Sunday ... 6 = Saturday


def _number(field: _Field, token: str) -> int:
    if token.lower() in field.names:
        return field.names[token.lower()]
    if not (token.isascii() and token.isdigit()):
        raise CronError(
            f"{field.name} '{token}' is not valid; use {field.low}-{field.high}{field.hint}"
        )
    value = int(token)
    if not field.low <= value <= field.high:
        raise CronError(
            f"{field.name} '{token}' is out of range {field.low}-{field.high}{field.hint}"
        )
    return value


def _expand(field: _Field, text: str, wrap: bool = False) -> list[int]:
    """Values of one field (lists, ranges, steps) in cron numbering, in the order written."""
    values: list[int] = []
    for item in text.split(","):
        match = _ITEM_RE.match(item)
        if not item or match is None:
            raise CronError(
                f"{field.name} '{text}' is not valid: use numbers {field.low}-{field.high}"
                f"{field.hint}, '*', lists 'a,b', ranges 'a-b' and steps '*/n' or 'a-b/n'"
            )
        start, end, step_text = match["start"], match["end"], match["step"]
        step = int(step_text) if step_text else 1
        if step == 0:
            raise CronError(f"{field.name} '{item}': a step of 0 is not allowed")
        if start == "*":
            if end is not None:
                raise CronError(f"{field.name} '{item}' is not valid: '*' cannot start a range")
            sequence = list(range(field.low, (field.star_high or field.high) + 1))
        else:
            first = _number(field, start)
            if end is not None:
                last = _number(field, end)
            elif step_text:  # "a/n" means from a to the end of the range
                last = field.star_high or field.high
            else:
                last = first
            if first <= last:
                sequence = list(range(first, last + 1))
            elif wrap:  # fri-mon: through the end of the week and around
                first %= 7
                sequence = (
                    list(range(first, last + 1))
                    if first <= last
                    else [*range(first, 7), *range(0, last + 1)]
                )
            else:
                raise CronError(
                    f"{field.name} range '{item}' goes backwards; write the smaller value first"
                )
        values.extend(sequence[::step])
    return values


def split_cron(expression: str) -> CronFields:
    """Parse and check a cron expression (5 fields or an @shorthand) without building a trigger."""
    if not isinstance(expression, str):
        raise CronError(f"cron expression must be text in quotes, not {expression!r}")
    text = expression.strip()
    if not text:
        raise CronError(f"cron expression is empty; {FORMAT_HELP}")
    if text.startswith("@"):
        text = text.lower()
        if text not in SPECIAL_EXPRESSIONS:
            allowed = ", ".join(SPECIAL_EXPRESSIONS)
            raise CronError(f"unknown cron shorthand '{expression.strip()}'; use one of {allowed}")
        text = SPECIAL_EXPRESSIONS[text]
    parts = text.split()
    if len(parts) != 5:
        extra = " (seconds and years are not supported)" if len(parts) in (6, 7) else ""
        raise CronError(
            f"cron expression '{expression.strip()}' has {len(parts)} field"
            f"{'' if len(parts) == 1 else 's'}{extra}; {FORMAT_HELP}"
        )
    try:
        return _check(*parts)
    except CronError as exc:
        raise CronError(f"{exc} (in cron expression '{expression.strip()}')") from None


def _check(minute: str, hour: str, dom: str, month: str, dow: str) -> CronFields:
    if dom != "*" and dow != "*":
        raise CronError(
            f"day-of-month '{dom}' and day-of-week '{dow}' are both restricted: cron runs when "
            "EITHER matches, but the scheduler would run only when BOTH match. Restrict only one "
            "of them and put '*' in the other, or write two schedules"
        )
    fields = CronFields(
        minutes=frozenset(_expand(_MINUTE, minute)),
        hours=frozenset(_expand(_HOUR, hour)),
        days_of_month=None if dom == "*" else frozenset(_expand(_DOM, dom)),
        months=frozenset(_expand(_MONTH, month)),
        days_of_week=None if dow == "*" else frozenset(d % 7 for d in _expand(_DOW, dow, True)),
    )
    if fields.days_of_month is not None and all(
        min(fields.days_of_month) > _MONTH_DAYS[m - 1] for m in fields.months
    ):
        raise CronError(
            f"day-of-month '{dom}' never occurs in month '{month}'; the schedule would never run"
        )
    return fields


def _compact(values: frozenset[int], low: int, high: int) -> str:
    """APScheduler field text for a value set: '*' when complete, else runs like '1-5,8'."""
    if values == frozenset(range(low, high + 1)):
        return "*"
    ordered = sorted(values)
    runs: list[str] = []
    begin = prev = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        runs.append(str(begin) if begin == prev else f"{begin}-{prev}")
        if value is not None:
            begin = prev = value
    return ",".join(runs)


def parse_cron(expression: str, timezone: ZoneInfo) -> CronTrigger:
    """Build an APScheduler 3 CronTrigger with classic cron meaning, firing in ``timezone``.

    Weekday numbers follow cron (0 or 7 = Sunday, 1 = Monday) and are passed to APScheduler as
    names. Raises :class:`CronError` for anything invalid or ambiguous.
    """
    fields = split_cron(expression)
    if fields.days_of_week is None:
        day_of_week = "*"
    else:
        day_of_week = ",".join(_APS_DOW[i] for i in range(7) if (i + 1) % 7 in fields.days_of_week)
    try:
        return CronTrigger(
            minute=_compact(fields.minutes, 0, 59),
            hour=_compact(fields.hours, 0, 23),
            day="*" if fields.days_of_month is None else _compact(fields.days_of_month, 1, 31),
            month=_compact(fields.months, 1, 12),
            day_of_week=day_of_week,
            second="0",
            timezone=timezone,
        )
    except (ValueError, TypeError) as exc:  # defensive: our checks should catch everything
        raise CronError(f"cron expression '{expression}' is not valid: {exc}") from exc


def describe_cron(expression: str) -> str:
    """Short English description for logs, e.g. 'at 08:00 on mon,tue,wed,thu,fri'."""
    fields = split_cron(expression)
    parts: list[str] = []
    if len(fields.minutes) == 1 and len(fields.hours) == 1:
        parts.append(f"at {min(fields.hours):02d}:{min(fields.minutes):02d}")
    else:
        parts.append(
            f"at minute {_compact(fields.minutes, 0, 59)} of hour {_compact(fields.hours, 0, 23)}"
        )
    if fields.days_of_month is not None:
        parts.append(f"on day {_compact(fields.days_of_month, 1, 31)}")
    if fields.days_of_week is not None:
        parts.append("on " + ",".join(_DOW_NAMES[d] for d in sorted(fields.days_of_week)))
    if fields.months != frozenset(range(1, 13)):
        parts.append("in " + ",".join(_MONTH_NAMES[m - 1] for m in sorted(fields.months)))
    return " ".join(parts)
