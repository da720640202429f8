"""The TTL-stream cascade against hostile batches (issue 18): TTL's deletions (REMOVE by the service
principal, with their old images) mixed with records it must ignore (an application's deletes and
changes), sessions written anew after TTL removed them, expired sessions TTL has not reached yet,
and a crash after any mutating call followed by Lambda's retry of the batch."""

import pytest
from aws import MotoServer
from hostile_worlds import (
    MUTATING,
    Batch,
    Faults,
    Session,
    World,
    batches,
    build,
    cascade,
    cascade_job,
    counted,
    crash_count_problems,
    deliver,
    differences,
    dry,
    effects,
    effects_of_runs,
    explain,
    mismatch,
    object_key,
    planned,
    stream_problems,
    unfinished,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st


def check_batch(server: MotoServer, batch: Batch) -> list[str]:
    """Dry run, the real run, then Lambda's retry of the same batch."""
    built = build(server, batch.world)
    delivered = deliver(built, batch)
    before = built.snapshot()
    job = cascade_job(batch.world)
    rehearsal = cascade(built, dry(job), delivered)
    unchanged = built.snapshot()
    real = cascade(built, job, delivered)
    after = built.snapshot()
    retry = cascade(built, job, delivered)
    again = built.snapshot()
    done = effects(before, after)
    problems = [f"the dry run changed the world: {d}" for d in differences(before, unchanged)]
    problems += stream_problems(before, after, delivered)
    problems += mismatch("dry run's plan vs effects", planned(rehearsal), done)
    problems += mismatch("metrics vs effects", counted(real), done)
    problems += [f"the retried batch changed the world: {d}" for d in differences(after, again)]
    problems += mismatch("retry's metrics vs its effects", counted(retry), effects(after, again))
    return problems


MARKED_ALREADY = Batch(World((Session("done", "past-2d", "uploaded", marked=True),)), (("ttl", "done"),))
TWO_KEPT_ONE_OBJECT = Batch(
    World((Session("a", "past-2d", "uploaded"), Session("b", "past-2d", "uploaded", key=object_key("a")))),
    (("ttl", "a"), ("ttl", "b")),
)
INTRUDER = Batch(
    World((Session("owner", "future-30d"), Session("intruder", "past-2d", key=object_key("owner")))),
    (("ttl", "intruder"),),
)


@settings(max_examples=30)
@given(batch=batches())
@example(batch=INTRUDER)  # finding 1
@example(batch=MARKED_ALREADY)  # finding 8
@example(batch=TWO_KEPT_ONE_OBJECT)  # finding 8: one object, two kept sessions
@example(  # TTL removed two sessions naming one object: the dry run plans two deletions of it
    batch=Batch(
        World((Session("a", "past-30m"), Session("b", "past-30m", key=object_key("a")))),
        (("ttl", "a"), ("ttl", "b")),
    )
)
@example(  # two expired sessions share an object: TTL removed one, the other is still there
    batch=Batch(
        World((Session("a", "past-2d"), Session("b", "past-2d", key=object_key("a")))),
        (("ttl", "a"),),
    )
)
def test_a_cascade_keeps_the_invariant_its_dry_run_is_its_plan_and_a_retry_repeats_nothing(
    moto_server: MotoServer, batch: Batch
) -> None:
    problems = check_batch(moto_server, batch)
    assert not problems, explain(problems, batch)


STREAM_CRASH_POINTS = (
    MUTATING,
    frozenset({"DeleteObject"}),
    frozenset({"AbortMultipartUpload"}),
    frozenset({"PutObjectTagging"}),
)


def check_crash(
    server: MotoServer, batch: Batch, crash_at: int, crash_on: frozenset[str] = MUTATING, lose_reply: bool = True
) -> list[str]:
    """The batch's run killed after its ``crash_at``-th mutating call (of ``crash_on``; as its reply
    arrives, or before the next one), then Lambda's retry of the batch: what the run does without the
    crash (on a copy of the world) must be done, and the metrics of both runs must add up to the effects."""
    job = cascade_job(batch.world)
    clean = build(server, batch.world)
    records = deliver(clean, batch)
    clean_before = clean.snapshot()
    cascade(clean, job, records)
    clean_after = clean.snapshot()
    built = build(server, batch.world)
    delivered = deliver(built, batch)
    before = built.snapshot()
    first = cascade(built, job, delivered, Faults(crash_after=crash_at, crash_on=crash_on, lose_reply=lose_reply))
    middle = built.snapshot()
    second = cascade(built, job, delivered)
    after = built.snapshot()
    problems = stream_problems(before, after, delivered)
    problems += [f"after the crash and the retry, {d}" for d in unfinished(clean_before, clean_after, after)]
    problems += crash_count_problems(counted(first, second), effects_of_runs(before, middle, after), lose_reply)
    crashed = "crashed" if first.summary is None else "finished before the crash point"
    return [*problems, f"(the first run {crashed})"] if problems else []


@settings(max_examples=20)
@given(
    batch=batches(),
    crash_at=st.integers(1, 4),
    crash_on=st.sampled_from(STREAM_CRASH_POINTS),
    lose_reply=st.booleans(),
)
@example(  # killed after the first object's delete: the retry must not count it again, nor miss it
    batch=Batch(
        World((Session("a", "past-2d", upload="empty"), Session("b", "past-2d"))), (("ttl", "a"), ("ttl", "b"))
    ),
    crash_at=1,
    crash_on=frozenset({"DeleteObject"}),
    lose_reply=True,
)
@example(  # killed right after deleting the object: the retry finds it gone and counts nothing
    batch=Batch(World((Session("a", "past-30m"),)), (("ttl", "a"),)),
    crash_at=1,
    crash_on=frozenset({"DeleteObject"}),
    lose_reply=True,
)
def test_a_crash_and_a_retry_leave_what_the_batch_without_the_crash_leaves(
    moto_server: MotoServer, batch: Batch, crash_at: int, crash_on: frozenset[str], lose_reply: bool
) -> None:
    problems = check_crash(moto_server, batch, crash_at, crash_on, lose_reply)
    assert not problems, explain(problems, batch, crash_at, sorted(crash_on), f"lose_reply={lose_reply}")


RICH = Batch(
    World(
        (
            Session("expired", "past-2d", "uploading", upload="empty"),
            Session("done", "past-2d", "uploaded"),
            Session("parts", "past-2d", "created", upload="parts"),
            Session("shared", "past-2d", "created", key=object_key("live")),
            Session("live", "future-30d", "created"),
            Session("again", "past-2d", "created"),
        ),
        owner_index=True,
    ),
    (("ttl", "expired"), ("ttl", "done"), ("ttl", "parts"), ("ttl", "shared"), ("ttl", "again")),
    rewritten=(("again", True),),
)


@pytest.mark.parametrize("lose_reply", [False, True], ids=["between-calls", "reply-lost"])
def test_a_crash_between_any_two_mutating_calls_and_a_retry(moto_server: MotoServer, lose_reply: bool) -> None:
    """Every crash point of one batch with every kind of effect (deletes, aborts, marks)."""
    counting = Faults()
    built = build(moto_server, RICH.world)
    cascade(built, cascade_job(RICH.world), deliver(built, RICH), counting)
    assert counting.mutations >= 4, "premise: the clean run deletes, aborts and marks"
    failing = {
        n: problems
        for n in range(1, counting.mutations + 1)
        if (problems := check_crash(moto_server, RICH, n, MUTATING, lose_reply))
    }
    assert not failing, "\n".join(f"crash after mutating call {n}: {p}" for n, p in failing.items())


def test_finding_1_ttl_removing_a_session_naming_a_live_sessions_object_does_not_take_it(
    moto_server: MotoServer,
) -> None:
    """Shared key intruder, on the stream: the expired session's key is the live session's object."""
    problems = check_batch(moto_server, INTRUDER)
    assert not problems, explain(problems, INTRUDER)


@pytest.mark.parametrize("batch", [MARKED_ALREADY, TWO_KEPT_ONE_OBJECT], ids=["marked-already", "two-kept-one-object"])
def test_finding_8_the_stream_dry_run_counts_the_marks_the_real_run_makes(
    moto_server: MotoServer, batch: Batch
) -> None:
    """A dry run counts a mark for every kept session whose object exists; the real run marks an object
    once, and not at all when it is marked already."""
    problems = check_batch(moto_server, batch)
    assert not problems, explain(problems, batch)
