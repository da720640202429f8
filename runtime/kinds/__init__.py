"""The registry of job kinds: the runner, the CLI, the policy builder, the alarms, the provider's
enums and the stack read a kind from here, and nothing else switches on its name. A new kind is one
module in this package and one line in REGISTERED."""

from expiry.runtime.kinds import orphaned_references, pg_monitor, pg_purge, stream_cascade, sweep, ttl_monitor
from expiry.runtime.kinds.kind import JobKind

REGISTERED: tuple[JobKind, ...] = (
    ttl_monitor.KIND,
    sweep.KIND,
    orphaned_references.KIND,
    pg_purge.KIND,
    pg_monitor.KIND,
    stream_cascade.KIND,
)
KINDS = {registered.name: registered for registered in REGISTERED}


def kind(name: str) -> JobKind:
    """The registered kind called ``name``; KeyError naming the registered ones otherwise."""
    if name not in KINDS:
        raise KeyError(f"no job kind {name!r}; registered: {', '.join(KINDS)}")
    return KINDS[name]


def names(**flags: bool) -> tuple[str, ...]:
    """The names of the kinds whose flags (scheduled, sweeping, postgres, deletes) have these values."""
    return tuple(k.name for k in REGISTERED if all(getattr(k, flag) == value for flag, value in flags.items()))
