"""The sweep job: first a plan, then exactly the plan.

A run reads everything it decides on (expired items, their objects and uploads, stuck uploads,
orphan candidates) and makes one decision per thing; the breaker may refuse the whole plan; a dry
run stops there and reports it, a real run carries it out. Every item is deleted on the condition
that it is still as it was read (a renewed item survives with its object), and its object and
upload are cleaned only after that delete succeeded. An object a pass kept is never deleted by a
later pass of the same run, and an object of an item in a kept status is marked so that no later
run takes it for an orphan once the item is gone."""

import importlib
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from botocore.exceptions import ClientError

from expiry.runtime.dynamodb.deletion_budget import ITEMS, ORPHANED_OBJECTS, Claim, reserve
from expiry.runtime.dynamodb.expired_items import (
    CHANGED,
    DELETED,
    count_unindexed_expired,
    delete_as_read,
    find_expired,
    key_of,
    pages,
    unchanged,
)
from expiry.runtime.dynamodb.items import BATCH_GET, chunks, existing_ids, plain, text_value
from expiry.runtime.dynamodb.rate_limit import Limiter, limiter_for
from expiry.runtime.dynamodb.ttl import is_expired
from expiry.runtime.jobs.breaker import refusal, report_refusals, scope
from expiry.runtime.jobs.config import HOOK_MODULE, Job
from expiry.runtime.jobs.run_control import Tally
from expiry.runtime.ownership import Ownership
from expiry.runtime.s3 import inventory, objects

Item = dict[str, Any]
Hook = Callable[[dict[str, Any], Job], bool | None]


def load_hook(job: Job) -> Hook | None:
    """The application's ``expiry_hooks.before_delete(item, job)``, bundled next to runtime/."""
    if not job.hook:
        return None
    module = importlib.import_module(HOOK_MODULE)
    return module.before_delete


@dataclass
class Decision:
    """What the run does with one item and the object and upload it points to."""

    image: Item
    delete: bool = False
    mark_partial: bool = False
    abort_upload: str | None = None
    object_key: str | None = None
    delete_object: bool = False
    mark_object: bool = False


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    orphan_uploads: list[tuple[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    orphans_source: dict[str, Any] = field(default_factory=dict)  # with an inventory: which source, and why

    def counts(self) -> dict[str, int]:
        d = self.decisions
        return {
            "items_to_delete": sum(x.delete for x in d),
            "items_to_mark": sum(x.mark_partial for x in d),
            "uploads_to_abort": sum(bool(x.abort_upload) for x in d),
            "objects_to_delete": sum(x.delete_object for x in d),
            "objects_to_mark": sum(x.mark_object for x in d),
            "orphans_to_delete": len(self.orphans),
            "orphan_uploads_to_abort": len(self.orphan_uploads),
        }


class Sweeper:
    """One run of a sweep job, with its clients, clock, deadline and counters."""

    def __init__(
        self,
        job: Job,
        dynamodb: Any,
        s3: Any,
        now: float,
        should_stop: Callable[[], bool],
        tally: Tally,
        hook: Hook | None = None,
        planning_over: Callable[[], bool] | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.job, self.dynamodb, self.s3, self.now = job, dynamodb, s3, now
        self.should_stop, self.tally, self.hook = should_stop, tally, hook
        self.acting_stop = should_stop
        self.planning_over = planning_over or should_stop
        self.item_count: int | None = None
        self.manifest: inventory.Manifest | None = None  # the inventory report the orphan pass reads
        self.limiter = limiter or limiter_for(job, dynamodb, lambda: self.should_stop())
        self.ownership = Ownership(job, dynamodb, s3, tally, lambda: self.should_stop()) if job.s3 else None
        s3_settings, stuck = job.s3, job.stuck_uploads
        self.read_attributes = tuple(
            dict.fromkeys(
                a
                for a in (
                    job.ttl_attribute,
                    s3_settings and s3_settings.key_attribute,
                    s3_settings and s3_settings.upload_id_attribute,
                    s3_settings and s3_settings.status_attribute,
                    stuck and stuck.since_attribute,
                )
                if a
            )
        )

    def run(self, plan: Plan | None = None) -> dict[str, Any]:
        """Plan (or take ``plan``, made earlier for this job: nothing is planned again), check the
        breaker, and (unless a dry run) do the plan; the plan's report."""
        with ThreadPoolExecutor(max_workers=self.job.workers) as pool:
            self.pool = pool
            if plan is None:
                self.should_stop = self.planning_over  # planning stops halfway, keeping time to act
                plan = self.plan()
                self.should_stop = self.acting_stop
            unindexed = count_unindexed_expired(self.dynamodb, self.job, self.now, self.tally, self._item_count)
            budget = None
            if not plan.refused and scope(self.job.breaker) == "per-table":
                plan.refused, budget = reserve(self.dynamodb, self.job, self._claims(plan), self.now)
            report_refusals(self.tally, plan.refused)
            if not self.job.dry_run and not plan.refused:
                self.carry_out(plan)
        if self.tally.counts["not_reached"] or self.should_stop():
            self.tally.add("stopped_early")
        return {"plan": report(self.job, plan), "unindexed_expired": unindexed, "budget": budget}

    def _claims(self, plan: Plan) -> list[Claim]:
        """What the plan deletes of the table's budgets (items; orphaned objects) and what it examined."""
        items = sum(d.delete for d in plan.decisions)
        orphans = len(plan.orphans) + len(plan.orphan_uploads)  # objects and uploads no item names
        candidates = self.tally.counts["orphan_candidates"] + self.tally.counts["orphan_upload_candidates"]
        return [
            Claim(ITEMS, items, max(self.tally.counts["items_read"], self._item_count()) if items else 0),
            Claim(ORPHANED_OBJECTS, orphans, max(candidates, orphans)),
        ]

    def _each(self, items: Iterable[Any], action: Callable[[Any], Any]) -> list[Any]:
        """``action`` on items concurrently, results in order; a failure is counted and logged,
        gives None and never ends the run."""

        stopped = threading.Event()

        def guarded(item: Any) -> Any:
            if stopped.is_set() or self.should_stop():
                stopped.set()
                self.tally.add("not_reached")
                return None
            try:
                return action(item)
            except Exception as error:  # noqa: BLE001 - one thing's failure is reported, the run goes on
                where = item if isinstance(item, str) else plain(key_of(self.job, getattr(item, "image", item)))
                self.tally.error(action.__name__, error, key=where)
                return None

        results: list[Any] = []
        for chunk in chunks(items):
            results += self.pool.map(guarded, chunk)
            if stopped.is_set():
                break
        return results

    # Planning -------------------------------------------------------------------------------

    def plan(self) -> Plan:
        plan = Plan()
        s3, stuck = self.job.s3, self.job.stuck_uploads
        ahead = s3.mark_ahead_seconds if s3 and s3.keep_statuses and s3.keep_marker == "tag" else 0
        found = find_expired(
            self.dynamodb, self.job, self.now + ahead, self.tally, self.should_stop, self.read_attributes
        )
        plan.decisions += [d for d in self._each(found, self.decide) if d]
        if stuck and stuck.since_attribute != self.job.ttl_attribute and not self.should_stop():
            decided = {repr(key_of(self.job, d.image)) for d in plan.decisions}
            plan.decisions += [d for d in self._each(self._stuck_items(decided), self.decide_stuck) if d]
        deletions = sum(d.delete for d in plan.decisions)
        if deletions > self.job.breaker.ignore_below:
            examined = max(self.tally.counts["items_read"], self._item_count())
            if reason := refusal(self.job.breaker, "items", deletions, examined):
                plan.refused.append(reason)
        if self.job.orphaned_objects and not self.should_stop():
            try:
                self.plan_orphans(plan)
            except inventory.InventoryError as error:
                # A report failing its checks: no orphan is planned on its word, nor on a listing's that
                # would hide the failure run after run; counted as an error (CleanupErrors, alarmed).
                plan.orphans.clear()
                plan.orphans_source = {"source": "none", "reason": str(error)}
                self.tally.error("read_inventory", error)
        return plan

    def _item_count(self) -> int:
        """The table's ItemCount (DescribeTable), read at most once a run."""
        if self.item_count is None:
            self.item_count = int(self.dynamodb.describe_table(TableName=self.job.table)["Table"].get("ItemCount", 0))
        return self.item_count

    def _image(self, found: Item) -> Item | None:
        """The item with every attribute a decision needs (the hook gets it whole)."""
        projected = not self.job.expiry_index or all(name in found for name in self.read_attributes)
        if projected and not self.hook:  # a Scan projects every attribute read (absent ones are absent)
            return found
        names = {f"#p{i}": name for i, name in enumerate([*self.job.key_attributes, *self.read_attributes])}
        projection = {} if self.hook else {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
        response = self.dynamodb.get_item(
            TableName=self.job.table, Key=key_of(self.job, found), ConsistentRead=True, **projection
        )
        return response.get("Item")

    def _status(self, image: Item) -> str | None:
        return text_value(image, self.job.s3.status_attribute) if self.job.s3 else None

    def _is_stuck(self, image: Item) -> bool:
        stuck = self.job.stuck_uploads
        if not stuck or self._status(image) != stuck.status:
            return False
        age = objects.age_seconds(image.get(stuck.since_attribute), self.now)
        return age is not None and age >= stuck.older_than_seconds

    def decide(self, found: Item) -> Decision | None:
        """The decision on an item found expired (or, for the look-ahead, about to expire)."""
        image = self._image(found)
        if image is None:
            self.tally.add("items_gone")
            return None
        s3 = self.job.s3
        kept = bool(s3 and self._status(image) in s3.keep_statuses)
        if not is_expired(image, self.job.ttl_attribute, self.now) or not self.job.delete_expired:
            # Not expired (the look-ahead), or TTL and a stream cascade own expired items: only the
            # objects of kept items are marked.
            return self._keep_object(Decision(image)) if kept else None
        self.tally.add("expired_found")
        if self.hook and self.hook(plain(image), self.job) is False:
            self.tally.add("items_kept_by_hook")
            return None
        decision = Decision(image, delete=True)
        if not s3:
            return decision
        if kept:
            return self._keep_object(decision)
        key = text_value(image, s3.key_attribute)
        upload_id = text_value(image, s3.upload_id_attribute)
        if key and upload_id:
            parts = objects.upload_has_parts(self.s3, s3.bucket, key, upload_id)
            stuck = self.job.stuck_uploads
            if parts and stuck and self._status(image) == stuck.status:
                if self._is_stuck(image):
                    return Decision(image, mark_partial=True, object_key=key)
                self.tally.add("items_waiting_for_stuck_rule")  # parts arrived: judged once it is stuck
                return Decision(image, object_key=key)
            decision.abort_upload = upload_id if parts is not None else None
        if key:
            decision.object_key = key
            decision.delete_object = objects.object_exists(self.s3, s3.bucket, key)
        if key and (decision.abort_upload or decision.delete_object):
            self._owned_by_this_item(decision, key)
        return decision

    def _owned_by_this_item(self, decision: Decision, key: str) -> None:
        """The ownership rule at planning: the object and upload go only if no other item names the
        key and the object is not marked kept (checked again once the item is deleted)."""
        assert self.ownership is not None
        reason = self.ownership.refusal(key, released=[key_of(self.job, decision.image)], confirm=False)
        if reason:
            self.tally.add(f"objects_kept_{reason}")
            decision.abort_upload, decision.delete_object = None, False

    def _keep_object(self, decision: Decision) -> Decision:
        """Keep the item's object, and mark it if it is not marked yet."""
        s3 = self.job.s3
        assert s3 is not None
        key = text_value(decision.image, s3.key_attribute)
        decision.object_key = key
        if key and s3.keep_marker == "tag" and objects.object_exists(self.s3, s3.bucket, key):
            decision.mark_object = not objects.is_marked_kept(self.s3, s3.bucket, key)
        return decision

    def _stuck_items(self, decided: set[str]) -> Iterator[Item]:
        """Items in the stuck status not decided yet (a Scan: the rule counts from another time than TTL)."""
        stuck, s3 = self.job.stuck_uploads, self.job.s3
        assert stuck and s3 and s3.status_attribute
        names = {f"#p{i}": name for i, name in enumerate([*self.job.key_attributes, *self.read_attributes])}
        kwargs = {
            "TableName": self.job.table,
            "FilterExpression": "#status = :stuck",
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": {**names, "#status": s3.status_attribute},
            "ExpressionAttributeValues": {":stuck": {"S": stuck.status}},
        }
        for item in pages(self.dynamodb.scan, kwargs, self.tally, self.should_stop, self.job.page_size):
            if repr(key_of(self.job, item)) not in decided:
                yield item

    def decide_stuck(self, image: Item) -> Decision | None:
        """A stuck upload: marked partial when parts arrived, else aborted and its item deleted."""
        s3 = self.job.s3
        assert s3 is not None
        key = text_value(image, s3.key_attribute)
        upload_id = text_value(image, s3.upload_id_attribute)
        if not self._is_stuck(image) or not key or not upload_id:
            return None
        self.tally.add("stuck_found")
        parts = objects.upload_has_parts(self.s3, s3.bucket, key, upload_id)
        if parts is None:
            self.tally.add("stuck_upload_gone")  # kept: without the upload nothing says what happened
            return Decision(image, object_key=key)
        if parts:
            return Decision(image, mark_partial=True, object_key=key)
        decision = Decision(image, delete=True, abort_upload=upload_id, object_key=key)
        self._owned_by_this_item(decision, key)
        return decision

    def plan_orphans(self, plan: Plan) -> None:
        """Objects whose owner is gone and that no pass kept or marked. Refused when the owner rule
        misreads the keys of the items this run read, or finds no owner for anything."""
        orphans, s3 = self.job.orphaned_objects, self.job.s3
        assert orphans and s3
        misread = self._misread_key(plan)
        if misread:
            plan.refused.append(misread)
            return
        decided = {d.object_key for d in plan.decisions if d.object_key}
        candidates = self._orphan_candidates(plan, decided)
        owners_found = examined = 0
        assert self.ownership is not None
        for batch in chunks(candidates, BATCH_GET):
            owners = existing_ids(self.dynamodb, self.job, {o.owner_id for o in batch}, self.tally)
            unnamed = [o.key for o in batch if o.owner_id not in owners]
            named = self.ownership.named_among(unnamed)  # the rule: by the attribute that names an object
            ownerless = [key for key in unnamed if key not in named]
            owners_found += len(batch) - len(ownerless)
            examined += len(batch)
            marked = self._each(ownerless, self._marked)
            self.tally.add("orphans_kept_marked", sum(m is True or m is None for m in marked))
            plan.orphans += [key for key, m in zip(ownerless, marked, strict=True) if m is False]
            if self.should_stop():
                return
        self.tally.add("orphan_candidates", examined)
        self.plan_orphan_uploads(plan, decided)
        if plan.orphans and not owners_found and not self.job.breaker.allow_mass_deletion:
            plan.refused.append(
                f"orphaned_objects.id_pattern found no owner for any of the {examined} objects it checked; "
                "nothing was deleted; check the pattern against the bucket's keys"
            )
        elif reason := refusal(self.job.breaker, "orphaned objects", len(plan.orphans), examined):
            plan.refused.append(reason)

    def plan_orphan_uploads(self, plan: Plan, decided: set[str]) -> None:
        """Multipart uploads under the prefix, older than the grace, on keys no item names: left by a
        session deleted before its cascade ran (a crash), they would wait for the lifecycle rule."""
        orphans, s3 = self.job.orphaned_objects, self.job.s3
        assert orphans and s3 and self.ownership
        if not s3.upload_id_attribute:
            return
        uploads = objects.orphan_upload_candidates(self.s3, s3.bucket, orphans, self.now, self.tally, decided)
        examined = 0
        for batch in chunks(uploads, BATCH_GET):
            owners = existing_ids(self.dynamodb, self.job, {u.owner_id for u in batch}, self.tally)
            unnamed = [u for u in batch if u.owner_id not in owners]
            named = self.ownership.named_among([u.key for u in unnamed])
            plan.orphan_uploads += [(u.key, u.upload_id) for u in unnamed if u.key not in named]
            examined += len(batch)
            if self.should_stop():
                break
        self.tally.add("orphan_upload_candidates", examined)
        if reason := refusal(self.job.breaker, "orphaned uploads", len(plan.orphan_uploads), examined):
            plan.refused.append(reason)

    def _orphan_candidates(self, plan: Plan, decided: set[str]) -> Iterator[objects.Orphan]:
        """Objects the orphan pass judges: from the newest S3 Inventory report when the job names one
        and it is fresh, else from a listing of the prefix (why, in the plan's ``orphans_source``)."""
        orphans, s3 = self.job.orphaned_objects, self.job.s3
        assert orphans and s3
        settings = orphans.inventory
        if settings:
            why: list[str] = []
            self.manifest = inventory.latest_manifest(
                self.s3,
                settings.destination_bucket,
                settings.destination_prefix,
                s3.bucket,
                settings.inventory_id,
                self.now,
                settings.max_age_seconds,
                why.append,
            )
            if self.manifest:
                location = f"s3://{settings.destination_bucket}/{self.manifest.key}"
                age = round((self.now - self.manifest.created) / 3600, 1)
                plan.orphans_source = {"source": "inventory", "manifest": location, "age_hours": age}
                return inventory.orphan_candidates(
                    self.s3, self.manifest, orphans, self.now, self.tally, decided.__contains__, self.should_stop
                )
            plan.orphans_source = {"source": "listing", "reason": why[0]}
        return objects.orphan_candidates(self.s3, s3.bucket, orphans, self.now, self.tally, decided.__contains__)

    def _marked(self, key: str) -> bool | str:
        """Whether the object carries the keep mark. From an inventory, first whether it is still the
        object the report listed: gone since, or written again since the report or within the
        grace, it is no candidate (counted; neither kept by a mark nor deleted)."""
        s3, orphans = self.job.s3, self.job.orphaned_objects
        assert s3 is not None and orphans is not None
        if self.manifest:
            modified = objects.last_modified(self.s3, s3.bucket, key)
            if modified is None:
                self.tally.add("orphans_gone_since_inventory")
                return "gone"
            if modified >= self.manifest.created or self.now - modified < orphans.older_than_seconds:
                self.tally.add("orphans_written_since_inventory")
                return "written"
        return objects.is_marked_kept(self.s3, s3.bucket, key)

    def _misread_key(self, plan: Plan) -> str | None:
        """The owner rule applied to the object keys of the items read: each must name its own item."""
        orphans, s3 = self.job.orphaned_objects, self.job.s3
        assert orphans and s3
        (hash_key,) = self.job.key_attributes
        for decision in plan.decisions:
            key = decision.object_key
            if not key or not key.startswith(orphans.prefix):
                continue
            owner = orphans.owner(key)
            own_id = text_value(decision.image, hash_key)
            if owner != own_id:
                return (
                    f"orphaned_objects.id_pattern reads owner {owner!r} from {key!r}, whose item is {own_id!r}; "
                    "no orphan was deleted"
                )
        return None

    # Carrying out ---------------------------------------------------------------------------

    def carry_out(self, plan: Plan) -> None:
        self._each(plan.decisions, self.apply)
        s3 = self.job.s3
        for start in range(0, len(plan.orphans), objects.DELETE_BATCH):
            if self.should_stop():
                self.tally.add("not_reached", len(plan.orphans) - start)
                return
            assert s3 is not None
            batch = self._still_orphaned(plan.orphans[start : start + objects.DELETE_BATCH])
            if not batch:
                continue
            try:
                self.tally.add("orphans_deleted", objects.delete_objects(self.s3, s3.bucket, batch, self.tally))
            except Exception as error:  # noqa: BLE001 - the batch is reported, the run goes on
                self.tally.error("delete_orphans", error, objects=len(batch))
        self._each(plan.orphan_uploads, self._abort_orphan_upload)

    def _still_orphaned(self, keys: list[str]) -> list[str]:
        """The rule again at delete time: the orphans no item has come to name and none marked since
        (an orphan whose check failed or was not reached is kept)."""
        verdicts = self._each(keys, self._orphan_may_go)
        return [key for key, may_go in zip(keys, verdicts, strict=False) if may_go is True]  # unreached: kept

    def _orphan_may_go(self, key: str) -> bool:
        assert self.ownership is not None
        if self.ownership.refusal(key):
            self.tally.add("objects_kept_at_delete")
            return False
        return True

    def _abort_orphan_upload(self, upload: tuple[str, str]) -> None:
        key, upload_id = upload
        s3 = self.job.s3
        assert s3 is not None and self.ownership is not None
        if self.ownership.named(key):
            self.tally.add("objects_kept_at_delete")
            return
        if objects.abort_upload(self.s3, s3.bucket, key, upload_id):
            self.tally.add("uploads_aborted")

    def apply(self, decision: Decision) -> None:
        s3 = self.job.s3
        if decision.mark_object:
            assert s3 and decision.object_key
            if objects.mark_kept(self.s3, s3.bucket, decision.object_key):
                self.tally.add("objects_marked_kept")
        if decision.mark_partial:
            self._set_partial(decision.image)
            return
        if not decision.delete:
            return
        if self.limiter and self.limiter.acquire() is None:
            self.tally.add("not_reached")  # the deadline came while waiting for the rate limit
            return
        outcome = delete_as_read(self.dynamodb, self.job, decision.image, self.read_attributes, self.should_stop)
        if outcome == CHANGED:
            self.tally.add("items_skipped")
            return
        self.tally.add("items_deleted" if outcome == DELETED else "items_gone")
        if not s3 or not decision.object_key or not (decision.abort_upload or decision.delete_object):
            return
        assert self.ownership is not None
        if self.ownership.refusal(decision.object_key, released=[key_of(self.job, decision.image)]):
            self.tally.add("objects_kept_at_delete")  # named again, or marked, since the plan
            return
        if decision.abort_upload and objects.abort_upload(
            self.s3, s3.bucket, decision.object_key, decision.abort_upload
        ):
            self.tally.add("uploads_aborted")
        if decision.delete_object:
            self.s3.delete_object(Bucket=s3.bucket, Key=decision.object_key)
            self.tally.add("objects_deleted")

    def _set_partial(self, image: Item) -> None:
        """Set the stuck item to the partial status only while it is still as read."""
        stuck, s3 = self.job.stuck_uploads, self.job.s3
        assert stuck and s3 and s3.status_attribute
        condition = unchanged(image, self.read_attributes)
        try:
            self.dynamodb.update_item(
                TableName=self.job.table,
                Key=key_of(self.job, image),
                UpdateExpression="SET #status = :partial",
                ConditionExpression=condition["ConditionExpression"],
                ExpressionAttributeNames={**condition["ExpressionAttributeNames"], "#status": s3.status_attribute},
                ExpressionAttributeValues={
                    **condition.get("ExpressionAttributeValues", {}),
                    ":partial": {"S": stuck.partial_status},
                },
            )
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                self.tally.add("items_skipped")
                return
            raise
        self.tally.add("items_marked")


def report(job: Job, plan: Plan) -> dict[str, Any]:
    """The plan's counts and a sample (``plan_sample_size``) of what each list holds."""
    cap = job.plan_sample_size

    def sample(values: Iterable[Any]) -> list[Any]:
        return list(islice(values, cap))

    d = plan.decisions
    rate = job.breaker.max_deletes_per_second
    pace = {"seconds_at_rate_limit": math.ceil(sum(x.delete for x in d) / rate)} if rate else {}
    source = {"orphans_source": plan.orphans_source} if plan.orphans_source else {}
    return {
        **pace,
        **source,
        "counts": plan.counts(),
        "refused": plan.refused,
        "sample": {
            "items_to_delete": sample(plain(key_of(job, x.image)) for x in d if x.delete),
            "items_to_mark": sample(plain(key_of(job, x.image)) for x in d if x.mark_partial),
            "uploads_to_abort": sample(x.object_key for x in d if x.abort_upload),
            "objects_to_delete": sample(x.object_key for x in d if x.delete_object),
            "objects_to_mark": sample(x.object_key for x in d if x.mark_object),
            "orphans_to_delete": sample(plan.orphans),
            "orphan_uploads_to_abort": sample(key for key, _ in plan.orphan_uploads),
        },
    }
