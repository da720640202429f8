"""Crash and retry (issue 18, finding 9): metrics are published per effect, so a run that dies midway
and its rerun report exactly what they did together; a throttled read backs off instead of failing."""

from typing import Any

import pytest
from botocore.exceptions import ClientError
from test_sweep import Proxy, clients_of
from uploads_world import (
    BUCKET,
    OWNER_INDEX,
    S3_SETTINGS,
    create_table,
    object_keys,
    put_session,
    run,
    session_ids,
    sweep_job,
)

from expiry.runtime.handlers.work import sweep_work
from expiry.runtime.jobs import metrics

SESSIONS = 30
ORPHANS = {"prefix": "uploads/", "older_than_seconds": 3600, "id_pattern": r"^uploads/[^/]+/(?P<id>[^/]+)\.mp4$"}
COUNTED = (metrics.ITEMS_DELETED, metrics.OBJECTS_DELETED, metrics.ORPHANS_DELETED)


class Killed(BaseException):
    """The process dying: nothing in the run catches it, as nothing runs after a kill."""


@pytest.fixture
def world(aws):
    create_table(aws.dynamodb, owner_index=True)
    aws.s3.create_bucket(Bucket=BUCKET)
    for n in range(SESSIONS):
        key = f"uploads/2025-08-21/s{n}.mp4"
        aws.s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        put_session(aws.dynamodb, f"s{n}", 1, key=key, status="created")
    return aws


@pytest.mark.parametrize("survive", [0, 1, 17, 29])
def test_a_killed_run_and_its_rerun_count_exactly_their_effects(world, survive):
    deletes = {"n": 0}

    def dying(inner: Any, **kwargs: Any) -> Any:
        if deletes["n"] >= survive:
            raise Killed
        deletes["n"] += 1
        return inner.delete_object(**kwargs)

    job = sweep_job(
        s3={**S3_SETTINGS, "owner_index": OWNER_INDEX},
        orphaned_objects=ORPHANS,
        workers=1,
        breaker={"allow_mass_deletion": True},
    )
    lines: list[dict[str, Any]] = []
    with pytest.raises(Killed):
        run(job, sweep_work(clients_of(world, s3=Proxy(world.s3, delete_object=dying))), stream_lines=lines)
    killed = {metric: sum(line.get(metric, 0) for line in lines if "_aws" in line) for metric in COUNTED}
    again = run(job, sweep_work(clients_of(world)))
    assert session_ids(world.dynamodb) == set() and object_keys(world.s3) == set()
    assert killed[metrics.OBJECTS_DELETED] == survive  # published as they happened, before the kill
    assert killed[metrics.ITEMS_DELETED] + again.emf[metrics.ITEMS_DELETED] == SESSIONS
    # The object of the session deleted just before the kill has no session left: the rerun's orphan
    # pass takes it, and counts it as an orphan.
    rerun_objects = again.emf[metrics.OBJECTS_DELETED] + again.emf[metrics.ORPHANS_DELETED]
    assert killed[metrics.OBJECTS_DELETED] + rerun_objects == SESSIONS


def test_three_throttles_on_one_page_read_back_off_and_the_run_succeeds(aws_in_process):
    aws = aws_in_process
    create_table(aws.dynamodb)
    put_session(aws.dynamodb, "old", 1)
    throttles = {"n": 0}

    def throttled_scan(inner: Any, **kwargs: Any) -> Any:
        if throttles["n"] < 3:  # each one after botocore's own attempts
            throttles["n"] += 1
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "Scan")
        return inner.scan(**kwargs)

    result = run(sweep_job(), sweep_work(clients_of(aws, dynamodb=Proxy(aws.dynamodb, scan=throttled_scan))))
    assert throttles["n"] == 3 and result.counts["items_deleted"] == 1
    assert "errors" not in result.counts
