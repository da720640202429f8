"""EventBridge Scheduler expressions: rate(...), cron(...) in AWS's 6-field syntax, at(...),
checked by AWS's rules before anything reaches AWS."""

import datetime as dt
import itertools
import re
import zoneinfo

from expiry.components import validation as v

RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
CRON = re.compile(r"^cron\((.+)\)$")
AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")

# name, lowest, highest, names, extra characters allowed beyond digits , - * /
CRON_FIELDS = (
    ("minutes", 0, 59, (), ""),
    ("hours", 0, 23, (), ""),
    ("day-of-month", 1, 31, (), "?LW"),
    ("month", 1, 12, MONTHS, ""),
    ("day-of-week", 1, 7, DAYS, "?L#"),
    ("year", 1970, 2199, (), ""),
)


def _cron_value(component: str, field: str, name: str, value: str, token: str, spec: tuple) -> None:
    _, low, high, names, _ = spec
    token = token.rstrip("LW") if name in ("day-of-month", "day-of-week") else token
    if token in ("", "*", "?") or token in names:
        return
    if not token.isdigit():
        v.fail(component, field, f"cron {name} field {value!r}: {token!r} is not a number or name")
    if not low <= int(token) <= high:
        v.fail(component, field, f"cron {name} field {value!r}: {token} is outside {low}..{high}")


def _cron_field(component: str, field: str, value: str, spec: tuple) -> None:
    name, _, _, _, extra = spec
    upper = value.upper()
    if not re.match(rf"^[0-9A-Z,\-*/{re.escape(extra)}]+$", upper):
        v.fail(component, field, f"cron {name} field {value!r} has characters AWS does not accept")
    for part in upper.split(","):
        base, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) < 1):
            v.fail(component, field, f"cron {name} field {value!r}: step {step!r} must be a number >= 1")
        base, _, nth = base.partition("#")
        if nth and (name != "day-of-week" or not nth.isdigit() or not 1 <= int(nth) <= 5):
            v.fail(component, field, f"cron {name} field {value!r}: '#' takes a week number 1..5")
        for token in base.split("-"):
            _cron_value(component, field, name, value, token, spec)


def check_expression(
    component: str, field: str, given: object, timezone: str = "UTC", now: dt.datetime | None = None
) -> str:
    """Check a schedule expression; raise ValueError naming ``field`` when AWS would refuse it or
    when an at() time in ``timezone`` is already past (the schedule would never run)."""
    expression = v.text(component, field, given, max_length=256)
    rate = RATE.match(expression)
    if rate:
        amount, unit = int(rate.group(1)), rate.group(2)
        if amount < 1:
            v.fail(component, field, f"rate value must be at least 1, got {amount}")
        if (amount == 1) != (not unit.endswith("s")):
            expected = unit.rstrip("s") if amount == 1 else unit.rstrip("s") + "s"
            v.fail(component, field, f"AWS wants rate({amount} {expected}), got {expression!r}")
        return expression
    cron = CRON.match(expression)
    if cron:
        fields = cron.group(1).split()
        if len(fields) != 6:
            v.fail(
                component,
                field,
                f"cron needs 6 fields (minutes hours day-of-month month day-of-week year), "
                f"got {len(fields)} in {expression!r}",
            )
        if (fields[2] == "?") == (fields[4] == "?"):
            v.fail(component, field, f"exactly one of day-of-month and day-of-week must be '?', got {expression!r}")
        for value, spec in zip(fields, CRON_FIELDS, strict=True):
            _cron_field(component, field, value, spec)
        return expression
    at = AT.match(expression)
    if at:
        try:
            when = dt.datetime.fromisoformat(at.group(1)).replace(tzinfo=zoneinfo.ZoneInfo(timezone))
        except ValueError:
            v.fail(component, field, f"at() needs a real date and time, got {expression!r}")
        current = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        if when <= current:
            v.fail(
                component,
                field,
                f"{expression} ({timezone}) is past (now {current:%Y-%m-%dT%H:%M:%S} UTC); it would never run",
            )
        return expression
    v.fail(component, field, f"must be rate(N unit), cron(6 fields) or at(yyyy-mm-ddThh:mm:ss), got {expression!r}")


def check_timezone(component: str, field: str, name: str) -> str:
    """Check an IANA time zone name."""
    v.text(component, field, name, max_length=50)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        v.fail(component, field, f"unknown IANA time zone {name!r} (e.g. UTC, Europe/Oslo)")
    return name


def rate_seconds(expression: str) -> int | None:
    """Seconds between runs of a rate() expression; None for cron() and at()."""
    rate = RATE.match(expression)
    return int(rate.group(1)) * UNIT_SECONDS[rate.group(2).rstrip("s")] if rate else None


def _step(field: str, unit: int, cycle: int) -> int | None:
    """Longest gap between fires of a minutes or hours field: '*' -> 1 unit, '*/N' or 'A/N' -> N units,
    'A,B,C' -> the largest gap around the cycle; None when the field is not one of those."""
    if field == "*":
        return unit
    if "/" in field and "," not in field and "-" not in field:
        return int(field.split("/")[1]) * unit
    if "," in field and all(part.isdigit() for part in field.split(",")):
        values = sorted(int(part) for part in field.split(","))
        gaps = [b - a for a, b in itertools.pairwise(values)] + [values[0] + cycle - values[-1]]
        return max(gaps) * unit
    return None


def interval_seconds(expression: str) -> int:
    """Longest expected gap between runs, for alarm periods: exact for rate(), an upper bound for
    cron() (6-field AWS or 5-field pg_cron), a day for anything irregular or one-off."""
    exact = rate_seconds(expression)
    if exact:
        return exact
    cron = CRON.match(expression)
    fields = (cron.group(1) if cron else expression).split()
    if len(fields) not in (5, 6):
        return 86400
    minutes, hours, day_of_month, _month, day_of_week = fields[:5]
    if day_of_week not in ("*", "?") or day_of_month not in ("*", "?"):
        return 7 * 86400 if day_of_month in ("*", "?") else 31 * 86400
    if hours == "*":
        return _step(minutes, 60, 60) or 3600
    hour_step = _step(hours, 3600, 24)
    if hour_step and minutes.isdigit():
        return hour_step
    return 86400
