"""Orphaned index entries: items under one hash key whose range key names a token and whose owner
(read from the entry) no longer has the item the entry points at.

ActingWeb's OAuth2 indexes are the model: entries `("_actingweb_oauth2", "_access_token_index:<t>")`
whose `data` is the JSON-encoded actor id point at `(<actor>, "mcp_tokens:<t>")`. An entry outlives
its token by a grace period on purpose; within it, or once expired, TTL removes the entry for free.
Like the sweep, a run plans first (a Query per range-key prefix, a consistent GetItem per target),
may be refused by the breaker, and deletes each entry only while it is unchanged."""

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from expiry.runtime.dynamodb.deletion_budget import INDEX_ENTRIES, Claim, reserve
from expiry.runtime.dynamodb.expired_items import CHANGED, DELETED, delete_as_read, key_of, pages
from expiry.runtime.dynamodb.items import chunks, plain, text_value
from expiry.runtime.dynamodb.rate_limit import Limiter, limiter_for
from expiry.runtime.dynamodb.ttl import ttl_value
from expiry.runtime.jobs.breaker import refusal, report_refusals
from expiry.runtime.jobs.config import IndexLayout, Job, References
from expiry.runtime.jobs.run_control import Tally

Item = dict[str, Any]
Found = tuple[IndexLayout, Item]


@dataclass
class Plan:
    orphans: list[Item] = field(default_factory=list)
    checked: int = 0
    targets_found: int = 0
    refused: list[str] = field(default_factory=list)


def owner_of(entry: Item, refs: References) -> str | None:
    """The owner an entry names (its JSON-encoded or plain text attribute); None if unreadable."""
    text = text_value(entry, refs.owner_attribute)
    if text is None or refs.owner_format == "text":
        return text or None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        return None
    return owner if isinstance(owner, str) and owner else None


def target_key(entry: Item, job: Job, layout: IndexLayout, owner: str) -> Item:
    refs = job.references
    assert refs is not None
    token = text_value(entry, job.key_attributes[1])[len(layout.range_prefix) :]  # type: ignore[index]
    parts = [template.format(owner=owner, token=token) for template in layout.target]
    return {name: {"S": part} for name, part in zip(refs.target_key_attributes, parts, strict=True)}


def entries(dynamodb: Any, job: Job, tally: Tally, should_stop: Callable[[], bool]) -> Iterator[Found]:
    """Every entry of every index: a Query on the hash key value and each range-key prefix."""
    refs = job.references
    assert refs is not None
    hash_key, range_key = job.key_attributes
    names = {"#h": hash_key, "#r": range_key, "#o": refs.owner_attribute, "#t": job.ttl_attribute}
    for layout in refs.indexes:
        kwargs: Item = {
            "TableName": job.table,
            "KeyConditionExpression": "#h = :h AND begins_with(#r, :p)",
            "ProjectionExpression": "#h, #r, #o, #t",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {":h": {"S": refs.hash_value}, ":p": {"S": layout.range_prefix}},
            "ConsistentRead": True,
        }
        for entry in pages(dynamodb.query, kwargs, tally, should_stop, job.page_size):
            yield layout, entry
        if should_stop():
            return


class IndexSweeper:
    """One run of an orphaned-references job."""

    def __init__(
        self,
        job: Job,
        dynamodb: Any,
        now: float,
        should_stop: Callable[[], bool],
        tally: Tally,
        limiter: Limiter | None = None,
    ) -> None:
        self.job, self.dynamodb, self.now, self.should_stop, self.tally = job, dynamodb, now, should_stop, tally
        self.limiter = limiter or limiter_for(job, dynamodb, should_stop)
        refs = job.references
        assert refs is not None
        self.refs = refs

    def run(self) -> dict[str, Any]:
        with ThreadPoolExecutor(max_workers=self.job.workers) as pool:
            plan = self.plan(pool)
            budget = None
            if not plan.refused:
                claim = Claim(INDEX_ENTRIES, len(plan.orphans), plan.checked)
                plan.refused, budget = reserve(self.dynamodb, self.job, [claim], self.now)
            report_refusals(self.tally, plan.refused)
            if not self.job.dry_run and not plan.refused:
                list(pool.map(self.delete, plan.orphans))
        if self.tally.counts["not_reached"] or self.should_stop():
            self.tally.add("stopped_early")
        sample = [plain(key_of(self.job, entry)) for entry in islice(plan.orphans, self.job.plan_sample_size)]
        return {
            "plan": {
                "counts": {"entries_checked": plan.checked, "orphans_to_delete": len(plan.orphans)},
                "refused": plan.refused,
                "sample": {"orphans_to_delete": sample},
            },
            **({"budget": budget} if budget else {}),
        }

    def plan(self, pool: ThreadPoolExecutor) -> Plan:
        plan = Plan()
        found = entries(self.dynamodb, self.job, self.tally, self.should_stop)
        for batch in chunks(islice(found, self.job.max_items)):
            for (_, entry), verdict in zip(batch, pool.map(self.judge, batch), strict=True):
                plan.checked += 1
                if verdict == "orphan":
                    plan.orphans.append(entry)
                elif verdict == "target":
                    plan.targets_found += 1
                self.tally.add(f"entries_{verdict}")
            if self.should_stop():
                break
        if plan.orphans and not plan.targets_found and not self.job.breaker.allow_mass_deletion:
            plan.refused.append(
                f"references: no entry's target was found among the {plan.checked} checked; nothing was deleted; "
                "check references.indexes[].target and owner_attribute against the table's items"
            )
        elif reason := refusal(self.job.breaker, "index entries", len(plan.orphans), plan.checked):
            plan.refused.append(reason)
        return plan

    def judge(self, found: Found) -> str:
        """target: the item it points at exists; orphan: it does not and the entry is not in its
        grace; grace: left to TTL; unreadable: no owner in the entry (kept, reported)."""
        layout, entry = found
        owner = owner_of(entry, self.refs)
        if owner is None:
            return "unreadable"
        key = target_key(entry, self.job, layout, owner)
        response = self.dynamodb.get_item(
            TableName=self.refs.target_table,
            Key=key,
            ConsistentRead=True,
            ProjectionExpression="#k",
            ExpressionAttributeNames={"#k": self.refs.target_key_attributes[0]},
        )
        if "Item" in response:
            return "target"
        expiry = ttl_value(entry, self.job.ttl_attribute)
        if expiry is not None and self.now >= expiry - self.refs.grace_seconds:
            return "grace"
        return "orphan"

    def delete(self, entry: Item) -> None:
        """Delete the entry while its owner and TTL are as read."""
        if self.limiter and self.limiter.acquire() is None:
            self.tally.add("not_reached")  # the deadline came while waiting for the rate limit
            return
        try:
            outcome = delete_as_read(
                self.dynamodb, self.job, entry, (self.refs.owner_attribute, self.job.ttl_attribute)
            )
        except Exception as error:  # noqa: BLE001 - one entry's failure never ends the run
            self.tally.error("delete_reference", error, key=plain(key_of(self.job, entry)))
            return
        if outcome == CHANGED:
            self.tally.add("items_skipped")
        else:
            self.tally.add("orphans_deleted" if outcome == DELETED else "orphans_gone")
