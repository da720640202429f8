"""The checks of one value shared by every reader of settings: the job parser (runtime/jobs/config.py),
the components' input checks (components/validation.py), the stack's config and the PostgreSQL purge's
settings (runtime/postgres/spec.py). Each returns the value or raises FieldError saying what is allowed
and what was given; the caller names the source and the field. Imports nothing beyond the standard
library (it runs in Lambda)."""

from collections.abc import Iterable
from typing import Any


class FieldError(ValueError):
    """A value that is not what its field allows; the message says what is, without the field's name."""


def integer(value: Any, low: int, high: int) -> int:
    """An int (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FieldError(f"must be an integer in {low}..{high}, got {value!r}")
    return value


def number(value: Any, low: float, high: float) -> float:
    """An int or float (not a bool) in ``low..high``, as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise FieldError(f"must be a number in {low}..{high}, got {value!r}")
    return float(value)


def boolean(value: Any) -> bool:
    """A real bool (not a truthy string from config)."""
    if not isinstance(value, bool):
        raise FieldError(f"must be true or false, got {value!r}")
    return value


def text(value: Any, max_length: int | None = None) -> str:
    """A non-empty string, of at most ``max_length`` characters when given."""
    if not isinstance(value, str) or not value or (max_length is not None and len(value) > max_length):
        limit = "" if max_length is None else f" of at most {max_length} characters"
        raise FieldError(f"must be a non-empty string{limit}, got {value!r}")
    return value


def texts(value: Any) -> tuple[str, ...]:
    """A list of non-empty strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise FieldError(f"must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def one_of(value: Any, allowed: Iterable[str]) -> str:
    """One of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise FieldError(f"must be one of {', '.join(allowed)}, got {value!r}")
    return value
