"""Expiry: Pulumi components that give data an end of life on AWS and PostgreSQL.

    from expiry import TtlTable, ScheduledSweeper, TtlStreamCascade, PgCronCleanup, CleanupAlarms

The components (and with them pulumi) are imported on first use, so the Lambda code in
``expiry.runtime``, which ships with this file, imports the package with boto3 alone."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

_COMPONENTS = {
    "CleanupAlarms": "expiry.components.cleanup_alarms",
    "PgCronCleanup": "expiry.components.pg_cron_cleanup",
    "ScheduledSweeper": "expiry.components.scheduled_sweeper",
    "TtlStreamCascade": "expiry.components.stream_cascade",
    "TtlTable": "expiry.components.ttl_table",
}
__all__ = ["CleanupAlarms", "PgCronCleanup", "ScheduledSweeper", "TtlStreamCascade", "TtlTable", "__version__"]

if TYPE_CHECKING:
    from expiry.components.cleanup_alarms import CleanupAlarms
    from expiry.components.pg_cron_cleanup import PgCronCleanup
    from expiry.components.scheduled_sweeper import ScheduledSweeper
    from expiry.components.stream_cascade import TtlStreamCascade
    from expiry.components.ttl_table import TtlTable


def __getattr__(name: str) -> Any:
    """A component on first access (PEP 562); anything else is an AttributeError."""
    if name not in _COMPONENTS:
        raise AttributeError(f"module 'expiry' has no attribute {name!r}")
    try:
        module = import_module(_COMPONENTS[name])
    except ModuleNotFoundError as error:
        if error.name not in ("pulumi", "pulumi_aws", "psycopg"):
            raise
        raise ModuleNotFoundError(
            f"expiry.{name} needs {error.name}, which the components extra installs: pip install 'expiry[components]'",
            name=error.name,
        ) from error
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_COMPONENTS])
