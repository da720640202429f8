"""Job settings: what handlers refuse at cold start, with the variable and field named."""

import importlib
import json
import sys

import pytest

from expiry.runtime.jobs.config import JobConfigError, job_from_environment, parse_job

BASE = {"kind": "sweep", "job_name": "j", "table_name": "t", "key_attributes": ["id"]}
S3 = {"bucket": "b", "key_attribute": "k"}
REFS = {"hash_value": "h", "owner_attribute": "data", "indexes": [{"range_prefix": "a:", "target": ["{owner}"]}]}


def test_defaults():
    job = parse_job(BASE)
    assert (job.ttl_attribute, job.namespace, job.dry_run, job.workers, job.scan_segments) == (
        "expires_at",
        "Expiry",
        False,
        64,
        1,
    )
    assert job.max_items == 100_000 and job.safety_margin_seconds == 15 and job.page_size is None
    assert job.projection("k", None, "k") == ["id", "expires_at", "k"]


BAD = [
    ({**BASE, "kind": "purge"}, "EXPIRY_JOB: kind: must be one of ttl-monitor, sweep, orphaned-references"),
    ({**BASE, "table_name": ""}, "EXPIRY_JOB: table_name: must be a non-empty string"),
    ({**BASE, "key_attributes": []}, "EXPIRY_JOB: key_attributes: must name the table's hash key"),
    ({**BASE, "workers": 0}, "EXPIRY_JOB: workers: must be an integer in 1..64, got 0"),
    ({**BASE, "dry_run": "yes"}, "EXPIRY_JOB: dry_run: must be true or false, got 'yes'"),
    ({**BASE, "max_items": True}, "EXPIRY_JOB: max_items: must be an integer"),
    ({**BASE, "colour": "red"}, "EXPIRY_JOB: unknown settings ['colour']"),
    ({**BASE, "references": {}}, "EXPIRY_JOB: unknown settings ['references']"),
    ({**BASE, "s3": {"bucket": "b"}}, "EXPIRY_JOB: s3.key_attribute: must be a non-empty string"),
    ({**BASE, "s3": {**S3, "keep_statuses": ["done"]}}, "EXPIRY_JOB: s3.keep_statuses: needs status_attribute"),
    ({**BASE, "stuck_uploads": {"status": "created"}}, "EXPIRY_JOB: stuck_uploads: needs the s3 section"),
    (
        {**BASE, "s3": S3, "stuck_uploads": {"status": "created"}},
        "EXPIRY_JOB: stuck_uploads: needs s3.upload_id_attribute and s3.status_attribute",
    ),
    ({**BASE, "orphaned_objects": {"id_pattern": "(.*)"}}, "EXPIRY_JOB: orphaned_objects: needs the s3 section"),
    (
        {**BASE, "s3": S3, "orphaned_objects": {"id_pattern": "uploads/"}},
        "EXPIRY_JOB: orphaned_objects.id_pattern: needs a capturing group",
    ),
    (
        {**BASE, "s3": S3, "orphaned_objects": {"id_pattern": "(unclosed"}},
        "EXPIRY_JOB: orphaned_objects.id_pattern: is not a regular expression",
    ),
    (
        {**BASE, "s3": S3, "orphaned_objects": {"id_pattern": "(.*)", "older_than_seconds": 60}},
        "EXPIRY_JOB: orphaned_objects.older_than_seconds: must be an integer in 3600..",
    ),
    (
        {**BASE, "key_attributes": ["a", "b"], "s3": S3, "orphaned_objects": {"id_pattern": "(.*)"}},
        "EXPIRY_JOB: orphaned_objects: needs a table keyed by its hash key alone",
    ),
    (
        {
            **BASE,
            "s3": {**S3, "upload_id_attribute": "u", "status_attribute": "s"},
            "stuck_uploads": {"status": "partial"},
        },
        "EXPIRY_JOB: stuck_uploads.status: must differ from partial_status",
    ),
    ({**BASE, "kind": "orphaned-references"}, "EXPIRY_JOB: references: is required"),
    (
        {**BASE, "expiry_index_name": "x", "expiry_index_shards": 0, "expiry_shard_attribute": "s"},
        "EXPIRY_JOB: expiry_index_shards: must be an integer in 1..100, got 0",
    ),
    ({**BASE, "expiry_index_shards": 4}, "EXPIRY_JOB: expiry_index_shards: needs expiry_index_name"),
    (
        {**BASE, "kind": "stream-cascade", "s3": S3, "archive_prefix": "x/"},
        "EXPIRY_JOB: archive_prefix: needs archive_bucket",
    ),
    ("[]", "EXPIRY_JOB: must be an object"),
    ({**BASE, "breaker": {"max_share": 1.5}}, "EXPIRY_JOB: breaker.max_share: must be a number in 0.0..1.0"),
    ({**BASE, "breaker": {"allow_mass_deletion": "yes"}}, "EXPIRY_JOB: breaker.allow_mass_deletion: must be true"),
    ({**BASE, "kind": "ttl-monitor", "breaker": {}}, "EXPIRY_JOB: unknown settings ['breaker']"),
    ({**BASE, "s3": {**S3, "keep_marker": "label"}}, "EXPIRY_JOB: s3.keep_marker: must be one of tag, none"),
    (
        {
            **BASE,
            "s3": {**S3, "status_attribute": "s", "keep_statuses": ["done"], "keep_marker": "none"},
            "orphaned_objects": {"id_pattern": "(.*)"},
        },
        "EXPIRY_JOB: s3.keep_marker: must be tag when keep_statuses and orphaned_objects are both set",
    ),
    ({**BASE, "unindexed_check_items": 100}, "EXPIRY_JOB: unindexed_check_items: needs expiry_index_name"),
    (
        {**BASE, "kind": "orphaned-references", "references": {**REFS, "indexes": []}},
        "EXPIRY_JOB: references.indexes: must be a non-empty list",
    ),
    (
        {
            **BASE,
            "kind": "orphaned-references",
            "references": {**REFS, "indexes": [{"range_prefix": "a:", "target": ["{owner}", "{token}"]}]},
        },
        "EXPIRY_JOB: references.indexes[0].target: must give the target's 1 key part(s)",
    ),
    (
        {
            **BASE,
            "key_attributes": ["id", "r"],
            "kind": "orphaned-references",
            "references": {**REFS, "indexes": [{"range_prefix": "a:", "target": ["{owner}", "{x}"]}]},
        },
        "EXPIRY_JOB: references.indexes[0].target: templates may use only {owner} and {token}",
    ),
    (
        {
            **BASE,
            "key_attributes": ["id", "r"],
            "kind": "orphaned-references",
            "references": {
                **REFS,
                "indexes": [
                    {"range_prefix": "a:", "target": ["{owner}", "{token}"]},
                    {"range_prefix": "a:b", "target": ["{owner}", "{token}"]},
                ],
            },
        },
        "EXPIRY_JOB: references.indexes[0].range_prefix: 'a:' overlaps another index's prefix",
    ),
    (
        {**BASE, "kind": "orphaned-references", "references": {**REFS, "owner_format": "yaml"}},
        "EXPIRY_JOB: references.owner_format: must be one of json, text",
    ),
    (
        {**BASE, "kind": "orphaned-references", "references": REFS},
        "EXPIRY_JOB: key_attributes: an orphaned-references job reads index entries by hash key and range-key prefix",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD, ids=[m.split(": ", 1)[1][:40] for _, m in BAD])
def test_bad_settings_name_the_field(raw, message):
    with pytest.raises(JobConfigError) as error:
        parse_job(raw)
    assert message in str(error.value)


def test_environment_errors_name_the_variable():
    with pytest.raises(JobConfigError, match="EXPIRY_JOB: is not set"):
        job_from_environment({})
    with pytest.raises(JobConfigError, match="EXPIRY_JOB: is not valid JSON"):
        job_from_environment({"EXPIRY_JOB": "{kind: sweep"})
    assert job_from_environment({"EXPIRY_JOB": json.dumps(BASE)}).table == "t"


@pytest.mark.parametrize("module", ["ttl_monitor", "sweep", "orphaned_references"])
def test_handlers_refuse_bad_configuration_at_cold_start(monkeypatch, module):
    name = f"expiry.runtime.handlers.{module}"
    monkeypatch.delenv("EXPIRY_JOB", raising=False)
    sys.modules.pop(name, None)
    with pytest.raises(JobConfigError, match="EXPIRY_JOB: is not set"):
        importlib.import_module(name)
    monkeypatch.setenv("EXPIRY_JOB", json.dumps({**BASE, "kind": "ttl-monitor" if module == "sweep" else "sweep"}))
    sys.modules.pop(name, None)
    with pytest.raises(JobConfigError, match="EXPIRY_JOB: kind: this handler runs"):
        importlib.import_module(name)
    sys.modules.pop(name, None)
