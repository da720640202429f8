"""Input checks shared by the components: every failure is a ValueError naming the
component, the field and what is allowed, raised before anything reaches AWS."""

import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

import pulumi

from expiry.runtime.jobs import fields

T = TypeVar("T")

AWS_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
LAYER_ARN = re.compile(r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:layer:[A-Za-z0-9_-]{1,140}:\d+$")
# One address: a local part, @, and a domain with a dot; no spaces, commas or second @.
EMAIL = re.compile(r"^[^@\s,;<>]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def fail(component: str, field: str, message: str) -> NoReturn:
    """Raise the ValueError every component uses for bad input."""
    raise ValueError(f"{component}: {field}: {message}")


def plain(component: str, field: str, value: Any) -> Any:
    """Refuse an Output where the component needs the value at construction."""
    if isinstance(value, pulumi.Output):
        fail(component, field, "must be a plain value known at construction, not an Output")
    return value


def checked(component: str, field: str, check: Callable[..., T], value: Any, *limits: Any) -> T:
    """``check(value, *limits)`` (a check of expiry.runtime.jobs.fields, shared with the job parser), its
    error naming the component and the field."""
    try:
        return check(value, *limits)
    except fields.FieldError as error:
        fail(component, field, str(error))


def one_of(component: str, field: str, value: Any, allowed: Iterable[str]) -> str:
    """Check that ``value`` is one of ``allowed``."""
    return checked(component, field, fields.one_of, value, allowed)


def boolean(component: str, field: str, value: Any) -> bool:
    """Check that ``value`` is a real bool (not a truthy string from config)."""
    return checked(component, field, fields.boolean, plain(component, field, value))


def integer(component: str, field: str, value: Any, low: int, high: int) -> int:
    """Check that ``value`` is an int in ``low..high``."""
    return checked(component, field, fields.integer, plain(component, field, value), low, high)


def text(component: str, field: str, value: Any, max_length: int = 255) -> str:
    """Check that ``value`` is a non-empty string of at most ``max_length`` characters."""
    return checked(component, field, fields.text, plain(component, field, value), max_length)


def aws_name(component: str, field: str, value: Any) -> str:
    """Check a DynamoDB table or index name: 3..255 characters of A-Z a-z 0-9 _ . -."""
    plain(component, field, value)
    if not isinstance(value, str) or not AWS_NAME.match(value):
        fail(component, field, f"must be 3..255 characters of A-Z a-z 0-9 _ . -, got {value!r}")
    return value


def email(component: str, field: str, value: Any) -> str:
    """Check that ``value`` is one e-mail address (name@domain.tld), not a list in a string."""
    plain(component, field, value)
    if not isinstance(value, str) or not EMAIL.match(value):
        fail(component, field, f"must be an e-mail address (one, name@example.com), got {value!r}")
    return value


def layer_arn(component: str, field: str, value: Any) -> Any:
    """Check a Lambda layer version ARN (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION); an Output
    is checked by AWS instead."""
    if not isinstance(value, pulumi.Output) and not (isinstance(value, str) and LAYER_ARN.match(value)):
        fail(component, field, f"must be a layer version ARN (arn:aws:lambda:...:layer:NAME:VERSION), got {value!r}")
    return value


def tags(component: str, field: str, value: Any) -> Any:
    """Check AWS tags: a mapping of 1..128-character keys (not aws:...) to values of at most 256
    characters. An Output, or an Output value, is checked by AWS instead."""
    if value is None or isinstance(value, pulumi.Output):
        return value
    if not isinstance(value, dict):
        fail(component, field, f"must be a mapping of tag keys to values, got {type(value).__name__} {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
            fail(component, field, f"tag keys must be 1..128 characters, not starting with aws:, got {key!r}")
        if not isinstance(item, pulumi.Output) and (not isinstance(item, str) or len(item) > 256):
            fail(component, f"{field}.{key}", f"must be a string of at most 256 characters, got {item!r}")
    return value


def known_fields(component: str, args: Any, args_type: type) -> dict[str, Any]:
    """The args as a dict, refusing fields the args type does not declare (a typo is not ignored)."""
    if not isinstance(args, dict):
        fail(component, "args", f"must be a mapping, got {type(args).__name__}")
    unknown = sorted(set(args) - set(args_type.__annotations__))
    if unknown:
        fail(component, "args", f"unknown fields {unknown}")
    return dict(args)


def unresolved(component: str, name: str, sources: dict[str, Any], values: Iterable[Any]) -> set[str]:
    """The keys of ``sources`` whose Output resolved to None: unknown (as under unit-test mocks that
    return only a resource's inputs), so checked as placeholders, with a warning; a plain None is not."""
    missing = {
        key
        for (key, source), value in zip(sources.items(), values, strict=True)
        if value is None and isinstance(source, pulumi.Output)
    }
    for key in sorted(missing):
        pulumi.log.warn(f"{component} {name}: {key} resolved to None, checked as unknown (mocks: see expiry.testing)")
    return missing
