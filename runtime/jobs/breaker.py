"""The mass-deletion breaker: a run that would delete more than its settings allow deletes nothing
and says why. A wrong key pattern, a wrong TTL unit or a wrong owner rule looks like this. With a
budget ledger (runtime.dynamodb.deletion_budget) the limits hold per table within a window, across
runs, shards and fan-out."""

from expiry.runtime.jobs.config import Breaker
from expiry.runtime.jobs.run_control import Tally

HOW_TO_PROCEED = (
    "nothing was deleted; if this is right, raise breaker.max_share or breaker.max_count, "
    "or set breaker.allow_mass_deletion for one deployment"
)


def refusal(breaker: Breaker, what: str, to_delete: int, examined: int) -> str | None:
    """Why ``to_delete`` of ``examined`` is too many for ``breaker``, or None when it may go on."""
    if breaker.allow_mass_deletion or to_delete <= breaker.ignore_below:
        return None
    if breaker.max_count is not None and to_delete > breaker.max_count:
        return f"{what}: {to_delete} to delete is more than breaker.max_count ({breaker.max_count}); {HOW_TO_PROCEED}"
    base = max(examined, to_delete)
    if to_delete > breaker.max_share * base:
        return (
            f"{what}: {to_delete} to delete of {base} examined ({to_delete / base:.0%}) is more than "
            f"breaker.max_share ({breaker.max_share:.0%}); {HOW_TO_PROCEED}"
        )
    return None


def allowance(breaker: Breaker, base: int) -> tuple[int, str]:
    """The most things a window judged against ``base`` may hold, and the setting that says so."""
    limit = (int(breaker.max_share * base), f"breaker.max_share ({breaker.max_share:.0%}) of {base}")
    if breaker.max_count is not None and breaker.max_count < limit[0]:
        limit = (breaker.max_count, "breaker.max_count")
    return limit if limit[0] > breaker.ignore_below else (breaker.ignore_below, "breaker.ignore_below")


def window_refusal(breaker: Breaker, what: str, to_delete: int, reserved: int, base: int) -> str | None:
    """Why ``to_delete`` more, after the ``reserved`` of earlier runs in the window, is too many for
    ``breaker`` on a table judged against ``base``; None when it may go on."""
    allowed, setting = allowance(breaker, base)
    if breaker.allow_mass_deletion or reserved + to_delete <= allowed:
        return None
    return (
        f"{what}: {to_delete} to delete after {reserved} reserved by earlier runs in this window is more than "
        f"the table's budget of {allowed} ({setting}) until the window ends; {HOW_TO_PROCEED}"
    )


def scope(breaker: Breaker) -> str:
    """What the breaker judges, as a run's summary says it: off, per-table (a ledger) or per-run."""
    if breaker.allow_mass_deletion:
        return "off"
    return "per-table" if breaker.budget_table else "per-run"


def report_refusals(tally: Tally, reasons: list[str]) -> None:
    """Count each refusal (MassDeletionRefused) and log it as one error line that says why."""
    for reason in reasons:
        tally.add("mass_deletion_refused")
        tally.error("breaker", RuntimeError(reason))
