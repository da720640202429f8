"""runtime/dynamodb/leases.py: TTL leases for job claims and the interruption audit, against moto.

moto 5.2.5 evaluates a write's condition and applies the write without a lock, so two requests
that moto_server handles at once can both pass ``attribute_not_exists`` (measured: 1 round in 100 of
16 claimers had two winners). DynamoDB serializes the writes to one item; the concurrent tests make
moto do the same (``atomic_moto``), so what they count is this library's behaviour, not moto's race.
"""

import logging
import random
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aws import Aws, MotoServer, make_client
from docs_pages import section
from moto import mock_aws
from moto.dynamodb.models import DynamoDBBackend

from expiry.runtime.dynamodb import leases
from expiry.runtime.dynamodb.leases import (
    AuditLayout,
    Lease,
    LeaseLayout,
    Outcome,
    check,
    claim,
    record_interruption,
    release,
    renew,
)

NOW = 1_790_000_000  # 2026-09-21, epoch seconds
MILLIS = NOW * 1000
KEY = "amelia#scott"
D = 60  # lease seconds in these tests
SKEW = 5  # claimers' clocks differ by up to +-SKEW seconds


def create_table(dynamodb: Any, name: str, key: str) -> None:
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def create_tables(dynamodb: Any, claims: LeaseLayout = leases.JOB_CLAIMS, audit: AuditLayout = leases.INTERRUPTIONS):
    create_table(dynamodb, claims.table, claims.key)
    create_table(dynamodb, audit.table, audit.key)


def items(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    return sorted(dynamodb.scan(TableName=table)["Items"], key=repr)


def raw(dynamodb: Any, key: str = KEY, layout: LeaseLayout = leases.JOB_CLAIMS) -> dict[str, Any] | None:
    return dynamodb.get_item(TableName=layout.table, Key={layout.key: {"S": key}}, ConsistentRead=True).get("Item")


@pytest.fixture
def db(aws: Aws) -> Any:
    create_tables(aws.dynamodb)
    return aws.dynamodb


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """One item operation at a time in moto (in-process or moto_server, which runs in this process)."""
    lock = threading.RLock()
    for name in ("get_item", "put_item", "update_item", "delete_item"):
        original = getattr(DynamoDBBackend, name)

        def locked(self: Any, *args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            with lock:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)


# --- the API, one call at a time (moto in-process and moto_server) ---------------------------------


def test_a_free_key_is_claimed_and_check_sees_the_lease(db):
    assert check(db, KEY, now=NOW) is None
    outcome = claim(db, KEY, owner="container-1", thread="thread-a", now=NOW, seconds=D)
    lease = Lease(KEY, "container-1", "thread-a", NOW, NOW + D)
    assert outcome == Outcome(True, lease)
    assert check(db, KEY, now=NOW + 1) == lease
    assert raw(db) == {
        "projectUserId": {"S": KEY},
        "containerId": {"S": "container-1"},
        "threadId": {"S": "thread-a"},
        "claimedAt": {"N": str(NOW)},
        "expiresAt": {"N": str(NOW + D)},
    }


def test_a_claim_for_another_thread_is_refused_with_the_holder(db):
    claim(db, KEY, owner="container-1", thread="thread-a", now=NOW, seconds=D)
    outcome = claim(db, KEY, owner="container-2", thread="thread-b", now=NOW + D, seconds=D)
    assert outcome == Outcome(False, Lease(KEY, "container-1", "thread-a", NOW, NOW + D))
    assert raw(db)["containerId"] == {"S": "container-1"}


def test_a_claim_for_the_same_thread_extends_and_hands_over_the_lease(db):
    claim(db, KEY, owner="container-1", thread="thread-a", now=NOW, seconds=D)
    outcome = claim(db, KEY, owner="container-2", thread="thread-a", now=NOW + 10, seconds=D)
    assert outcome == Outcome(True, Lease(KEY, "container-2", "thread-a", NOW + 10, NOW + 10 + D))
    # The previous owner no longer holds it.
    assert renew(db, KEY, owner="container-1", now=NOW + 11, seconds=D) == Outcome(False, outcome.holder)
    assert release(db, KEY, owner="container-1", now=NOW + 11) == Outcome(False, outcome.holder)
    assert check(db, KEY, now=NOW + 11) == outcome.holder


def test_an_expired_but_present_lease_counts_as_absent(db):
    claim(db, KEY, owner="container-1", thread="thread-a", now=NOW, seconds=D)
    # At its expiry second it is still live (DynamoDB's rule: expired when earlier than now) ...
    assert check(db, KEY, now=NOW + D) is not None
    assert not claim(db, KEY, owner="container-2", thread="thread-b", now=NOW + D).granted
    # ... one second later it is absent to check and claim, though the item is still there.
    assert check(db, KEY, now=NOW + D + 1) is None
    assert raw(db) is not None
    taken = claim(db, KEY, owner="container-2", thread="thread-b", now=NOW + D + 1, seconds=D)
    assert taken == Outcome(True, Lease(KEY, "container-2", "thread-b", NOW + D + 1, NOW + 2 * D + 1))


def test_a_refusal_reports_no_holder_when_the_lease_it_met_had_expired(db):
    claim(db, KEY, owner="container-1", thread="thread-a", now=NOW, seconds=D)
    assert renew(db, KEY, owner="container-2", now=NOW + D + 1) == Outcome(False, None)
    assert release(db, KEY, owner="container-2", now=NOW + D + 1) == Outcome(False, None)


def test_renew_is_for_the_holder_of_a_live_lease_only(db):
    claim(db, KEY, owner="container-1", thread="thread-a", now=NOW, seconds=D)
    before = raw(db)
    refused = renew(db, KEY, owner="container-2", now=NOW + 30, seconds=D)
    assert refused == Outcome(False, Lease(KEY, "container-1", "thread-a", NOW, NOW + D))
    assert raw(db) == before
    renewed = renew(db, KEY, owner="container-1", now=NOW + 30, seconds=D)
    assert renewed == Outcome(True, Lease(KEY, "container-1", "thread-a", NOW, NOW + 30 + D))
    # A lapsed lease is not renewed (someone may have been told it was free): claim it again.
    lapsed = renew(db, KEY, owner="container-1", now=NOW + 30 + D + 1, seconds=D)
    assert lapsed == Outcome(False, None)
    assert raw(db)["expiresAt"] == {"N": str(NOW + 30 + D)}
    assert renew(db, "nobody#here", owner="container-1", now=NOW) == Outcome(False, None)


def test_release_is_for_the_holder_only(db):
    claim(db, KEY, owner="container-1", thread="thread-a", now=NOW, seconds=D)
    holder = Lease(KEY, "container-1", "thread-a", NOW, NOW + D)
    assert release(db, KEY, owner="container-2", now=NOW + 1) == Outcome(False, holder)
    assert check(db, KEY, now=NOW + 1) == holder
    assert release(db, KEY, owner="container-1", now=NOW + 1) == Outcome(True, None)
    assert raw(db) is None
    assert release(db, KEY, owner="container-1", now=NOW + 1) == Outcome(False, None)


def test_the_holder_may_release_its_expired_lease(db):
    claim(db, KEY, owner="container-1", thread="thread-a", now=NOW, seconds=D)
    assert release(db, KEY, owner="container-1", now=NOW + D + 100) == Outcome(True, None)
    assert raw(db) is None


def test_a_claim_keeps_the_applications_own_attributes(db):
    db.put_item(TableName="active-jobs", Item={"projectUserId": {"S": KEY}, "note": {"S": "kept"}})
    # No expiry attribute: DynamoDB never expires it, so it is a live lease nobody holds.
    assert check(db, KEY, now=NOW) == Lease(KEY, "", "", None, None)
    assert not claim(db, KEY, owner="container-1", thread="thread-a", now=NOW).granted
    db.update_item(
        TableName="active-jobs",
        Key={"projectUserId": {"S": KEY}},
        UpdateExpression="SET expiresAt = :e",
        ExpressionAttributeValues={":e": {"N": str(NOW - 1)}},
    )
    assert claim(db, KEY, owner="container-1", thread="thread-a", now=NOW).granted
    assert raw(db)["note"] == {"S": "kept"}


def test_a_lease_in_milliseconds_written_by_someone_else_is_refused_by_name(db):
    db.put_item(
        TableName="active-jobs",
        Item={"projectUserId": {"S": KEY}, "containerId": {"S": "c"}, "expiresAt": {"N": str(MILLIS)}},
    )
    with pytest.raises(ValueError, match="attribute 'expiresAt' 1790000000000.0 looks like epoch milliseconds"):
        check(db, KEY, now=NOW)


def test_any_table_and_attribute_names(aws):
    layout = LeaseLayout(
        table="locks", key="lock", owner="worker", thread="job", claimed_at="since", expires_at="until"
    )
    audit = AuditLayout(
        table="audit", key="id", record="rec", interrupted="victim", new_thread="by", timestamp="at", ttl="gone"
    )
    create_tables(aws.dynamodb, layout, audit)
    assert claim(aws.dynamodb, "k", owner="w1", thread="j1", now=NOW, seconds=D, layout=layout).granted
    assert claim(aws.dynamodb, "k", owner="w2", thread="j2", now=NOW + 1, layout=layout).holder.owner == "w1"
    assert renew(aws.dynamodb, "k", owner="w1", now=NOW + 2, seconds=D, layout=layout).granted
    assert release(aws.dynamodb, "k", owner="w1", now=NOW + 3, layout=layout).granted
    assert items(aws.dynamodb, "locks") == []
    record_interruption(
        aws.dynamodb, "m", record_id="r", interrupted_container="w1", new_thread="j2", now=NOW, layout=audit
    )
    assert items(aws.dynamodb, "audit") == [
        {
            "id": {"S": "m"},
            "rec": {"S": "r"},
            "victim": {"S": "w1"},
            "by": {"S": "j2"},
            "at": {"N": str(NOW)},
            "gone": {"N": str(NOW + 30 * 86400)},
        }
    ]


def test_an_interruption_is_recorded_with_a_30_day_ttl(db):
    written = record_interruption(
        db, "message-42", record_id="record-7", interrupted_container="container-1", new_thread="thread-b", now=NOW
    )
    assert items(db, "interruptions") == [written]
    assert written == {
        "messageId": {"S": "message-42"},
        "recordId": {"S": "record-7"},
        "interruptedContainer": {"S": "container-1"},
        "newThreadId": {"S": "thread-b"},
        "timestamp": {"N": str(NOW)},
        "ttl": {"N": str(NOW + 30 * 86400)},
    }
    shorter = record_interruption(
        db, "message-43", record_id="r", interrupted_container="c", new_thread="t", now=NOW, retention_seconds=3600
    )
    assert shorter["ttl"] == {"N": str(NOW + 3600)}


# --- bad input: the error names the field, and nothing is written ------------------------------------


def _claim(db, **bad):
    return claim(db, **{"key": KEY, "owner": "container-9", "thread": "thread-z", "now": NOW + 1, **bad})


def _renew(db, **bad):
    return renew(db, **{"key": KEY, "owner": "container-1", "now": NOW + 1, **bad})


def _release(db, **bad):
    return release(db, **{"key": KEY, "owner": "container-1", "now": NOW + 1, **bad})


def _record(db, **bad):
    return record_interruption(
        db, **{"message_id": "m", "record_id": "r", "interrupted_container": "c", "new_thread": "t", "now": NOW, **bad}
    )


def _check(db, **bad):
    return check(db, **{"key": KEY, "now": NOW + 1, **bad})


@pytest.mark.parametrize(
    ("call", "bad", "message"),
    [
        (_claim, {"now": MILLIS}, "now 1790000000000 looks like epoch milliseconds"),
        (_claim, {"seconds": 3_600_000}, "seconds 3600000 is over 604800 seconds: a duration in milliseconds"),
        (_claim, {"seconds": 0}, "seconds must be a whole number of seconds > 0, got 0"),
        (_claim, {"seconds": 1.5}, "seconds must be a whole number of seconds > 0, got 1.5"),
        (_claim, {"seconds": True}, "seconds must be a whole number of seconds > 0, got True"),
        (_claim, {"owner": ""}, "owner must be a non-empty string, got ''"),
        (_claim, {"thread": None}, "thread must be a non-empty string, got None"),
        (_claim, {"key": 7}, "key must be a non-empty string, got 7"),
        (_claim, {"now": "soon"}, "now must be a number of epoch seconds, got 'soon'"),
        (_renew, {"now": MILLIS}, "now 1790000000000 looks like epoch milliseconds"),
        (_renew, {"seconds": 86_400_000}, "seconds 86400000 is over 604800 seconds"),
        (_renew, {"owner": ""}, "owner must be a non-empty string"),
        (_release, {"now": MILLIS}, "now 1790000000000 looks like epoch milliseconds"),
        (_release, {"owner": 1}, "owner must be a non-empty string, got 1"),
        (_check, {"now": MILLIS}, "now 1790000000000 looks like epoch milliseconds"),
        (_check, {"key": ""}, "key must be a non-empty string"),
        (_record, {"now": MILLIS}, "now 1790000000000 looks like epoch milliseconds"),
        (_record, {"retention_seconds": 30 * 86_400_000}, "retention_seconds 2592000000 is over 315360000 seconds"),
        (_record, {"retention_seconds": -1}, "retention_seconds must be a whole number of seconds > 0"),
        (_record, {"message_id": ""}, "message_id must be a non-empty string"),
        (_record, {"record_id": None}, "record_id must be a non-empty string"),
        (_record, {"interrupted_container": ""}, "interrupted_container must be a non-empty string"),
        (_record, {"new_thread": ""}, "new_thread must be a non-empty string"),
    ],
)
def test_bad_input_is_refused_by_name_and_writes_nothing(db, call, bad, message):
    claim(db, KEY, owner="container-1", thread="thread-a", now=NOW, seconds=D)
    before = (items(db, "active-jobs"), items(db, "interruptions"))
    with pytest.raises(ValueError, match=message):
        call(db, **bad)
    assert (items(db, "active-jobs"), items(db, "interruptions")) == before


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: LeaseLayout(table=""), "LeaseLayout.table must be a non-empty string, got ''"),
        (lambda: LeaseLayout(owner="threadId"), "LeaseLayout: attribute names must differ"),
        (
            lambda: LeaseLayout(expires_at=None),  # type: ignore[arg-type]
            "LeaseLayout.expires_at must be a non-empty string, got None",
        ),
        (lambda: AuditLayout(ttl="timestamp"), "AuditLayout: attribute names must differ"),
        (lambda: AuditLayout(record=""), "AuditLayout.record must be a non-empty string"),
    ],
)
def test_a_bad_layout_is_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- many claimers at once, over HTTP, with skewed clocks --------------------------------------------


@dataclass
class Claimers:
    """N claimers, each with its own client and a clock ``skew`` seconds off the true time."""

    clients: list[Any]
    skews: list[int]
    pool: ThreadPoolExecutor

    def round(self, who: list[int], call: Callable[[int, Any, int], Outcome], true_now: int) -> dict[int, Outcome]:
        """All of ``who`` call at once (a barrier), each with its own clock; their outcomes."""
        barrier = threading.Barrier(len(who))

        def one(i: int) -> Outcome:
            barrier.wait(timeout=60)
            return call(i, self.clients[i], true_now + self.skews[i])

        return dict(zip(who, self.pool.map(one, who), strict=True))


@pytest.fixture
def server(moto_server: MotoServer, caplog: pytest.LogCaptureFixture) -> Iterator[str]:
    """moto_server with the two tables; its URL. Thousands of requests: no log line for each."""
    caplog.set_level(logging.WARNING, logger="werkzeug")
    moto_server.reset()
    create_tables(make_client("dynamodb", moto_server.url))
    yield moto_server.url
    moto_server.reset()


@pytest.fixture
def claimers(server: str, atomic_moto: None) -> Iterator[Claimers]:
    n = 12
    rng = random.Random(11)
    skews = [rng.randint(-SKEW, SKEW) for _ in range(n)]
    skews[0], skews[1] = -SKEW, SKEW  # both extremes present
    with ThreadPoolExecutor(max_workers=n) as pool:
        yield Claimers([make_client("dynamodb", server) for _ in range(n)], skews, pool)


def _claim_as(i: int, client: Any, now: int) -> Outcome:
    return claim(client, KEY, owner=f"container-{i}", thread=f"thread-{i}", now=now, seconds=D)


def test_concurrent_claimers_with_skewed_clocks_one_winner_per_lease_period(claimers):
    everyone = list(range(len(claimers.clients)))
    true_now = NOW
    periods = []
    holder: Lease | None = None
    for _period in range(4):
        # The key is free to every clock: exactly one of all claimers wins.
        outcomes = claimers.round(everyone, _claim_as, true_now)
        winners = [i for i, outcome in outcomes.items() if outcome.granted]
        assert len(winners) == 1, outcomes
        holder = outcomes[winners[0]].holder
        assert holder is not None and holder.owner == f"container-{winners[0]}"
        periods.append(holder)
        assert all(outcome.holder == holder for outcome in outcomes.values())  # refusals name the winner
        others = [i for i in everyone if f"container-{i}" != holder.owner]
        assert holder.expires_at is not None
        # The holder then stops (no renewals). Until every clock has passed its expiry, nobody but a
        # claimer whose clock is past it may take the key; from then on someone must; never two.
        taken = None
        for true_now in range(holder.expires_at - SKEW - 2, holder.expires_at + SKEW + 2):
            live_for_all = true_now + max(claimers.skews[i] for i in others) <= holder.expires_at
            outcomes = claimers.round(others, _claim_as, true_now)
            winners = [i for i, outcome in outcomes.items() if outcome.granted]
            assert len(winners) <= 1, outcomes
            for i in winners:
                assert taken is None, "a second takeover in the same lease period"
                assert true_now + claimers.skews[i] > holder.expires_at, "taken over before expiry"
                taken = outcomes[i].holder
                others.remove(i)  # the new holder stops too; a claim by it would only extend its lease
            if live_for_all:
                assert winners == [] and all(o.holder == holder for o in outcomes.values())
        assert taken is not None, "nobody took over a lease that had expired for every clock"
        # The new holder's lease ends D after its own clock; the next period starts after it.
        assert taken.expires_at is not None
        true_now = taken.expires_at + SKEW + 1
    assert len(periods) == 4


def test_concurrent_renew_and_release_only_the_holder_succeeds(claimers):
    everyone = list(range(len(claimers.clients)))
    first = claimers.round(everyone, _claim_as, NOW)
    (winner,) = [i for i, outcome in first.items() if outcome.granted]
    holder = first[winner].holder

    def renew_as(i: int, client: Any, now: int) -> Outcome:
        return renew(client, KEY, owner=f"container-{i}", now=now, seconds=D)

    def release_as(i: int, client: Any, now: int) -> Outcome:
        return release(client, KEY, owner=f"container-{i}", now=now)

    renewed = claimers.round(everyone, renew_as, NOW + D // 2)
    assert [i for i, outcome in renewed.items() if outcome.granted] == [winner]
    fresh = renewed[winner].holder
    assert fresh is not None and fresh.expires_at == NOW + D // 2 + claimers.skews[winner] + D
    assert holder is not None and fresh.owner == holder.owner
    assert all(outcome.holder in (holder, fresh) for outcome in renewed.values())

    released = claimers.round(everyone, release_as, NOW + D // 2 + 1)
    assert [i for i, outcome in released.items() if outcome.granted] == [winner]
    assert all(outcome.holder in (None, fresh) for outcome in released.values())
    assert check(claimers.clients[0], KEY, now=NOW + D // 2 + 1) is None


# --- random interleavings: the number of double grants --------------------------------------------


@dataclass
class Model:
    """The lease as the grants so far imply it, and every way a grant or refusal can be wrong."""

    lease: Lease | None = None
    double_grants: int = 0
    wrong: list[str] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)

    def live(self, now: int) -> Lease | None:
        return self.lease if self.lease is not None and self.lease.is_live(now) else None

    def note(self, what: str) -> None:
        self.seen[what] = self.seen.get(what, 0) + 1

    def claimed(self, outcome: Outcome, owner: str, thread: str, now: int) -> None:
        live = self.live(now)
        if outcome.granted:
            if live is not None and live.thread != thread:
                self.double_grants += 1
            self.note("same-thread" if live is not None else "takeover" if self.lease else "fresh")
            if outcome.holder != Lease(KEY, owner, thread, now, now + D):
                self.wrong.append(f"claim granted to {owner} reports {outcome.holder}")
            self.lease = outcome.holder
        else:
            self.note("claim-refused")
            if live is None or live.thread == thread or outcome.holder != live:
                self.wrong.append(f"claim by {owner} at {now} refused ({outcome.holder}); model: {live}")

    def renewed(self, outcome: Outcome, owner: str, now: int) -> None:
        live = self.live(now)
        mine = live is not None and live.owner == owner
        if outcome.granted != mine or outcome.holder != (
            Lease(KEY, owner, live.thread, live.claimed_at, now + D) if mine and live else live
        ):
            self.wrong.append(f"renew by {owner} at {now}: {outcome}; model: {live}")
        self.note("renewed" if outcome.granted else "renew-refused")
        if outcome.granted:
            self.lease = outcome.holder

    def released(self, outcome: Outcome, owner: str, now: int) -> None:
        mine = self.lease is not None and self.lease.owner == owner
        if outcome.granted != mine or outcome.holder != (None if mine else self.live(now)):
            self.wrong.append(f"release by {owner} at {now}: {outcome}; model: {self.lease}")
        self.note("released" if outcome.granted else "release-refused")
        if outcome.granted:
            self.lease = None

    def checked(self, found: Lease | None, now: int) -> None:
        if found != self.live(now):
            self.wrong.append(f"check at {now}: {found}; model: {self.live(now)}")


def _naive_claim(client: Any, owner: str, thread: str, now: int) -> Callable[[], Outcome]:
    """The race a conditional write prevents: read now, write later without a condition."""
    seen = check(client, KEY, now=now)

    def write() -> Outcome:
        if seen is not None and seen.thread != thread:
            return Outcome(False, seen)
        lease = Lease(KEY, owner, thread, now, now + D)
        client.put_item(
            TableName="active-jobs",
            Item={
                "projectUserId": {"S": KEY},
                "containerId": {"S": owner},
                "threadId": {"S": thread},
                "claimedAt": {"N": str(now)},
                "expiresAt": {"N": str(now + D)},
            },
        )
        return Outcome(True, lease)

    return write


def run_interleaving(client: Any, rng: random.Random, naive: bool = False) -> Model:
    """Random steps of 2-5 actors (some sharing a thread) with skewed clocks on one key."""
    client.delete_item(TableName="active-jobs", Key={"projectUserId": {"S": KEY}})
    actors = rng.randint(2, 5)
    skews = [rng.randint(-SKEW, SKEW) for _ in range(actors)]
    threads = [f"thread-{rng.randrange(actors)}" for _ in range(actors)]
    pending: list[tuple[str, str, int, Callable[[], Outcome]]] = []  # naive writes not yet made
    model = Model()
    true_now = NOW
    for _step in range(rng.randint(8, 20)):
        if model.lease is not None and model.lease.expires_at is not None and rng.random() < 0.3:
            # Land on the edges of the current lease as some actor's clock sees them.
            true_now = max(true_now, model.lease.expires_at + rng.choice((-1, 0, 1)) - rng.choice(skews))
        else:
            true_now += rng.choice((0, 0, 1, 2, D // 4, D // 2, D))
        if pending and rng.random() < 0.5:
            owner, thread, now, write = pending.pop(rng.randrange(len(pending)))
            model.claimed(write(), owner, thread, now)
            continue
        i = rng.randrange(actors)
        owner, thread, now = f"container-{i}", threads[i], true_now + skews[i]
        step = rng.choices(("claim", "renew", "release", "check"), weights=(5, 2, 1, 1))[0]
        if step == "claim" and naive:
            pending.append((owner, thread, now, _naive_claim(client, owner, thread, now)))
        elif step == "claim":
            model.claimed(claim(client, KEY, owner=owner, thread=thread, now=now, seconds=D), owner, thread, now)
        elif step == "renew":
            model.renewed(renew(client, KEY, owner=owner, now=now, seconds=D), owner, now)
        elif step == "release":
            model.released(release(client, KEY, owner=owner, now=now), owner, now)
        else:
            model.checked(check(client, KEY, now=now), now)
    return model


def test_random_interleavings_never_grant_twice(server):
    client = make_client("dynamodb", server)
    rng = random.Random(2026)
    double_grants, wrong, seen = 0, [], {}
    for _ in range(200):
        model = run_interleaving(client, rng)
        double_grants += model.double_grants
        wrong += model.wrong
        for what, count in model.seen.items():
            seen[what] = seen.get(what, 0) + count
    assert double_grants == 0
    assert wrong == []
    # Every kind of decision happened, many times: the runs were not vacuous.
    for what in ("fresh", "takeover", "same-thread", "claim-refused", "renewed", "renew-refused", "released"):
        assert seen.get(what, 0) >= 20, seen


def test_the_double_grant_count_catches_a_claim_that_reads_then_writes(aws_in_process):
    create_tables(aws_in_process.dynamodb)
    rng = random.Random(2026)
    double_grants = sum(run_interleaving(aws_in_process.dynamodb, rng, naive=True).double_grants for _ in range(50))
    assert double_grants > 0


# --- README ----------------------------------------------------------------------------------------


def readme_example() -> str:
    _, text = section("Job claims: leases in `runtime/dynamodb/leases.py`")
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match, "the job-claims section has no python example"
    return match.group(1)


def test_the_readme_example_runs():
    code = readme_example()
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        create_tables(dynamodb, LeaseLayout(table="active-jobs-dev"), AuditLayout(table="interruptions-dev"))
        exec(compile(code, "docs/stack.md (job claims)", "exec"), {})
        (lease,) = items(dynamodb, "active-jobs-dev")
        (record,) = items(dynamodb, "interruptions-dev")
    assert lease["containerId"] == {"S": "container-2"} and lease["threadId"] == {"S": "thread-b"}
    assert record["interruptedContainer"] == {"S": "container-1"}
    assert int(record["ttl"]["N"]) - int(record["timestamp"]["N"]) == 30 * 86400
