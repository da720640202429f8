"""Issue 20: one schema end to end. EXPIRY_JOB holds the component args' own names and nesting; the job is
parsed once per component; 0.3's settings are read for one more release, with a warning naming the new key."""

import io
import json
import tempfile
import typing
import warnings
from pathlib import Path
from typing import Any

import pulumi
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from pulumi_harness import Harness, RecordingMocks, RecordingMonitor

from expiry.components import scheduled_sweeper, stream_cascade
from expiry.components.scheduled_sweeper import ScheduledSweeper, ScheduledSweeperArgs
from expiry.components.stream_cascade import TtlStreamCascade, TtlStreamCascadeArgs
from expiry.runtime.cli import main
from expiry.runtime.cli_deployed import deployed_jobs
from expiry.runtime.jobs.config import (
    RENAMED_0_3,
    JobConfigError,
    SettingsDeprecationWarning,
    current_schema,
    parse_job,
)

FUNCTION = "aws:lambda/function:Function"
ACCOUNT = "123456789012"
TABLE_ARN = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/t"
LAYER = f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:psycopg:1"
SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db"
HOOK = Path(tempfile.mkdtemp(prefix="expiry-hook-")) / "keep_hook.py"
HOOK.write_text("def before_delete(item, job):\n    return True\n")
# What a test does not check itself: the other keys' warnings of a 0.3 document (each test checks its own).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
FAST = (Phase.explicit, Phase.reuse, Phase.generate)  # a Pulumi program per example: no slow shrinking
# Settings that name other resources: given as Outputs when the example says so.
NAME_PATHS = ("table_name", "s3.bucket", "references.target_table_name", "postgres.host", "archive_bucket")


@pytest.fixture(autouse=True)
def build_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path_factory.getbasetemp() / "one-schema-build"))


def fresh_mocks() -> Harness:
    """Mocks of their own for one example (the fixture's would keep every example's resources)."""
    pulumi.runtime.set_all_config({})
    monitor = RecordingMonitor(RecordingMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="expiry", stack="test", preview=False, monitor=monitor)
    return Harness(monitor)


def with_outputs(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with each name setting of NAME_PATHS as an Output (inside a program); not the table of a
    PostgreSQL job, which its purge must know at construction (PurgeSpec checks it as an identifier)."""
    args = {key: dict(value) if isinstance(value, dict) else value for key, value in args.items()}
    for path in NAME_PATHS[1:] if "purge" in args else NAME_PATHS:
        section, _, key = path.rpartition(".")
        holder = args.get(section) if section else args
        if isinstance(holder, dict) and key in holder:
            holder[key] = pulumi.Output.from_input(holder[key])
    return args


def undeclared(settings: dict[str, Any], args_type: Any, path: str = "") -> list[str]:
    """The keys of ``settings`` (dotted) that ``args_type`` (a TypedDict, nested ones too) does not declare."""
    hints = {
        key: typing.get_args(hint)[0] if typing.get_origin(hint) is typing.NotRequired else hint
        for key, hint in args_type.__annotations__.items()
    }
    found = []
    for key, value in settings.items():
        where = f"{path}{key}"
        if key not in hints:
            found.append(where)
        elif isinstance(value, dict) and typing.is_typeddict(hints[key]):
            found += undeclared(value, hints[key], f"{where}.")
        elif isinstance(value, list) and typing.get_origin(hints[key]) is list:
            (inner,) = typing.get_args(hints[key])
            for i, item in enumerate(value):
                if isinstance(item, dict) and typing.is_typeddict(inner):
                    found += undeclared(item, inner, f"{where}[{i}].")
    return found


names = st.from_regex(r"[a-z][a-z0-9_]{2,15}", fullmatch=True)
tuning = {
    "job_name": names,
    "namespace": st.sampled_from(["Expiry", "Team/Cleanup"]),
    "dry_run": st.booleans(),
    "max_items": st.integers(1, 10_000_000),
    "page_size": st.integers(1, 10_000),
    "safety_margin_seconds": st.integers(1, 200),
}
index = st.fixed_dictionaries(
    {"expiry_index_name": names, "expiry_index_shards": st.integers(1, 100), "expiry_shard_attribute": names},
    optional={"unindexed_check_items": st.integers(0, 100_000)},
)
breaker = st.fixed_dictionaries(
    {},
    optional={
        "max_share": st.floats(0, 1),
        "max_count": st.integers(0, 10_000),
        "ignore_below": st.integers(0, 100),
        "allow_mass_deletion": st.booleans(),
        "window_seconds": st.integers(60, 86_400),
        "max_deletes_per_second": st.integers(1, 1000),
    },
)


@st.composite
def sweeper_args(draw: st.DrawFn) -> dict[str, Any]:
    """Valid ScheduledSweeper args of any scheduled kind."""
    kind = draw(st.sampled_from(sorted(scheduled_sweeper.KINDS)))
    args: dict[str, Any] = {"kind": kind, "schedule": "rate(1 hour)"}
    args |= draw(st.fixed_dictionaries({}, optional=tuning))
    if kind in ("pg-purge", "pg-monitor"):
        postgres = {"host": draw(names), "database": draw(names), "secret_arn": SECRET}
        postgres |= draw(st.fixed_dictionaries({}, optional={"port": st.integers(1, 65535), "user": names}))
        purge = {"expiry_column": draw(names)} | draw(
            st.fixed_dictionaries({}, optional={"batch_size": st.integers(10, 5000)})
        )
        return args | {"table_name": draw(names), "postgres": postgres, "purge": purge, "psycopg_layer_arn": LAYER}
    keys = [draw(names), draw(names)] if kind == "orphaned-references" else [draw(names)]
    args |= {"table_name": draw(names), "table_arn": TABLE_ARN, "key_attributes": keys, "ttl_attribute": draw(names)}
    args |= draw(index) if draw(st.booleans()) else {}
    if kind in ("sweep", "orphaned-references"):
        args |= {"breaker": draw(breaker)} if draw(st.booleans()) else {}
        args |= {"hooks_path": str(HOOK)} if draw(st.booleans()) else {}
    if kind == "sweep":
        s3 = {"bucket": draw(names), "key_attribute": draw(names), "object_prefix": "uploads/"}
        if draw(st.booleans()):
            s3 |= {"upload_id_attribute": draw(names), "status_attribute": draw(names), "keep_statuses": ["uploaded"]}
            args["stuck_uploads"] = {"status": "created", "older_than_seconds": draw(st.integers(60, 86_400))}
        args |= {"s3": s3, "delete_expired": draw(st.booleans())}
        args |= {"orphaned_objects": {"id_pattern": r"uploads/(?P<id>[^/]+)", "prefix": "uploads/"}}
    if kind == "orphaned-references":
        references: dict[str, Any] = {
            "hash_value": draw(names),
            "owner_attribute": draw(names),
            "indexes": [{"range_prefix": "_token:", "target": ["{owner}", "tokens:{token}"]}],
            "grace_seconds": draw(st.integers(0, 7200)),
        }
        if draw(st.booleans()):
            references |= {"target_table_name": draw(names), "target_table_arn": f"{TABLE_ARN}-target"}
        args["references"] = references
    return args


@st.composite
def cascade_args(draw: st.DrawFn) -> dict[str, Any]:
    """Valid TtlStreamCascade args."""
    args: dict[str, Any] = {
        "table_name": draw(names),
        "table_arn": TABLE_ARN,
        "stream_arn": f"{TABLE_ARN}/stream/2026-01-01T00:00:00.000",
        "key_attributes": [draw(names)],
    }
    args |= draw(
        st.fixed_dictionaries({}, optional={"job_name": names, "dry_run": st.booleans(), "workers": st.integers(1, 64)})
    )
    if draw(st.booleans()):
        args["s3"] = {"bucket": draw(names), "key_attribute": draw(names), "object_prefix": "uploads/"}
    if "s3" not in args or draw(st.booleans()):
        args["archive_bucket"] = draw(names)
        args |= {"archive_prefix": "expired/"} if draw(st.booleans()) else {}
    return args


@settings(max_examples=25, phases=FAST)
@given(args=sweeper_args(), outputs=st.booleans())
def test_a_sweepers_settings_are_its_own_args(args, outputs):
    harness = fresh_mocks()
    harness.run(lambda: ScheduledSweeper("job", with_outputs(args) if outputs else args))
    env = json.loads(harness.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"])
    assert undeclared(env, ScheduledSweeperArgs) == []
    for key in ("schedule", "table_arn", "psycopg_layer_arn"):
        assert key not in env  # deploy-only
    assert "object_prefix" not in env.get("s3", {}) and "target_table_arn" not in env.get("references", {})
    job = parse_job(env)
    assert (job.kind, job.name, job.table) == (args["kind"], args.get("job_name", "job"), args["table_name"])
    assert job.hook == ("hooks_path" in args) and env.get("hooks_path", HOOK.name) == HOOK.name


@settings(max_examples=15, phases=FAST)
@given(args=cascade_args(), outputs=st.booleans())
def test_a_cascades_settings_are_its_own_args(args, outputs):
    harness = fresh_mocks()
    harness.run(lambda: TtlStreamCascade("cascade", with_outputs(args) if outputs else args))
    env = json.loads(harness.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"])
    assert env.pop("kind") == "stream-cascade"  # the one key that is no arg: a TtlStreamCascade is its kind
    assert undeclared(env, TtlStreamCascadeArgs) == []
    job = parse_job({"kind": "stream-cascade", **env})
    assert job.table == args["table_name"] and (job.archive is None) == ("archive_bucket" not in args)


def counting(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Any]:
    calls: list[Any] = []

    def parse(raw: Any, source: str = "") -> Any:
        calls.append(raw)
        return parse_job(raw, source)

    monkeypatch.setattr(module, "parse_job", parse)
    return calls


def test_a_sweeper_parses_its_job_once(pulumi_mocks, monkeypatch):
    calls = counting(monkeypatch, scheduled_sweeper)
    args = {
        "kind": "sweep",
        "schedule": "rate(1 hour)",
        "table_name": "sessions",
        "table_arn": TABLE_ARN,
        "key_attributes": ["id"],
        "s3": {"bucket": "uploads", "key_attribute": "key"},
    }
    pulumi_mocks.run(lambda: ScheduledSweeper("video", with_outputs(args)))
    env = json.loads(pulumi_mocks.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"])
    assert len(calls) == 1 and calls[0]["table_name"] == "x" * 96  # at construction, with placeholders
    assert (env["table_name"], env["s3"]["bucket"], env["budget_table_name"]) == (
        "sessions",
        "uploads",
        "video-budget-physical",
    )


def test_a_cascade_parses_its_job_once(pulumi_mocks, monkeypatch):
    calls = counting(monkeypatch, stream_cascade)
    args = {
        "table_name": "sessions",
        "table_arn": TABLE_ARN,
        "stream_arn": f"{TABLE_ARN}/stream/x",
        "key_attributes": ["id"],
        "archive_bucket": "archive",
    }
    pulumi_mocks.run(lambda: TtlStreamCascade("cascade", with_outputs(args)))
    env = json.loads(pulumi_mocks.one(FUNCTION).inputs["environment"]["variables"]["EXPIRY_JOB"])
    assert len(calls) == 1 and (env["table_name"], env["archive_bucket"]) == ("sessions", "archive")


def test_a_name_resolved_later_is_checked_as_the_parser_checks_it(pulumi_mocks):
    args = {
        "kind": "sweep",
        "schedule": "rate(1 hour)",
        "table_name": "sessions",
        "table_arn": TABLE_ARN,
        "key_attributes": ["id"],
    }
    with pytest.raises(ValueError, match=r"ScheduledSweeper: s3\.bucket: must be a non-empty string, got ''"):
        pulumi_mocks.run(
            lambda: ScheduledSweeper(
                "video", {**args, "s3": {"bucket": pulumi.Output.from_input(""), "key_attribute": "key"}}
            )
        )


# 0.3's settings, as a deployed function's EXPIRY_JOB or a --job file held them ---------------------------

OLD_SWEEP = {
    "kind": "sweep",
    "name": "j",
    "table": "t",
    "key_attributes": ["id"],
    "expiry_index": {"name": "by-expiry", "shards": 4, "shard_attribute": "shard", "only_shards": [1]},
    "breaker": {"budget_table": "ledger", "window_seconds": 3600},
    "hook": True,
}
NEW_SWEEP = {
    "kind": "sweep",
    "job_name": "j",
    "table_name": "t",
    "key_attributes": ["id"],
    "expiry_index_name": "by-expiry",
    "expiry_index_shards": 4,
    "expiry_shard_attribute": "shard",
    "only_shards": [1],
    "budget_table_name": "ledger",
    "breaker": {"window_seconds": 3600},
    "hooks_path": "expiry_hooks",
}
REFS = {
    "hash_value": "h",
    "owner_attribute": "data",
    "indexes": [{"range_prefix": "a:", "target": ["{owner}", "{token}"]}],
}
OLD_REFERENCES = {
    "kind": "orphaned-references",
    "name": "r",
    "table": "t",
    "key_attributes": ["id", "r"],
    "references": {**REFS, "target_table": "owners"},
}
NEW_REFERENCES = {
    "kind": "orphaned-references",
    "job_name": "r",
    "table_name": "t",
    "key_attributes": ["id", "r"],
    "references": {**REFS, "target_table_name": "owners"},
}
OLD_CASCADE = {
    "kind": "stream-cascade",
    "name": "c",
    "table": "t",
    "key_attributes": ["id"],
    "archive": {"bucket": "archive", "prefix": "expired/"},
}
NEW_CASCADE = {
    "kind": "stream-cascade",
    "job_name": "c",
    "table_name": "t",
    "key_attributes": ["id"],
    "archive_bucket": "archive",
    "archive_prefix": "expired/",
}
PAIRS = [(OLD_SWEEP, NEW_SWEEP), (OLD_REFERENCES, NEW_REFERENCES), (OLD_CASCADE, NEW_CASCADE)]


def test_0_3_settings_are_read_with_a_warning_naming_the_new_key():
    named = set()
    for old, new in PAIRS:
        with pytest.warns(SettingsDeprecationWarning) as caught:
            job = parse_job(old)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert job == parse_job(new)  # the same job, and the new spelling warns of nothing
        for warning in caught:
            message = str(warning.message)
            named |= {(o, n) for o, n in RENAMED_0_3.items() if f": {o} is 0.3's spelling of {n}: give {n}" in message}
    assert named == set(RENAMED_0_3.items())  # every renamed key, each named with the key it became


def test_0_3_hook_false_means_no_hook():
    with pytest.warns(SettingsDeprecationWarning, match="hook is 0.3's spelling of hooks_path"):
        job = parse_job({**OLD_SWEEP, "hook": False})
    assert job.hook is False
    with pytest.raises(JobConfigError, match="EXPIRY_JOB: hook: must be true or false, got 'yes'"):
        parse_job({**OLD_SWEEP, "hook": "yes"})


def old_spelling(settings: dict[str, Any], old: str) -> dict[str, Any]:
    """``settings`` (the new spelling) with the 0.3 key ``old`` added too."""
    settings = {key: dict(value) if isinstance(value, dict) else value for key, value in settings.items()}
    section, _, key = old.rpartition(".")
    value = True if old == "hook" else "x"
    if section:
        settings[section] = {**settings.get(section, {}), key: value}
    else:
        settings[key] = value
    return settings


@pytest.mark.parametrize(("old", "new"), RENAMED_0_3.items())
def test_both_spellings_of_a_setting_are_refused_naming_both(old, new):
    base = next(n for _, n in PAIRS if (new.partition(".")[0] if "." in new else new) in n)
    with pytest.raises(JobConfigError, match=rf"^EXPIRY_JOB: {old}, {new}: one setting given twice"):
        parse_job(old_spelling(base, old))


def test_a_0_3_section_with_keys_of_its_own_is_refused_naming_them():
    with pytest.raises(
        JobConfigError, match=r"EXPIRY_JOB: expiry_index: 0\.3's section, unknown now: give expiry_index_name"
    ):
        parse_job({**OLD_SWEEP, "expiry_index": {"name": "i", "shard_attribute": "s", "colour": "red"}})


def test_current_schema_leaves_what_it_is_given_alone():
    old = json.loads(json.dumps(OLD_SWEEP))
    with pytest.warns(SettingsDeprecationWarning):
        assert current_schema(old, "--job") == NEW_SWEEP
    assert old == OLD_SWEEP


LATER = "(0.3's keys are read for one more release)"


def test_the_cli_reads_a_0_3_job_file_with_one_warning_line_per_key(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"kind": "pg-purge", "name": "p", "table": "t"}))
    out, err = io.StringIO(), io.StringIO()
    assert main(["sweep", "--job", f"@{path}", "--yes"], out, err) == 2
    assert err.getvalue().splitlines() == [
        f"expiry: warning: --job: name is 0.3's spelling of job_name: give job_name {LATER}",
        f"expiry: warning: --job: table is 0.3's spelling of table_name: give table_name {LATER}",
        "expiry: error: --job: kind: sweep runs sweep and orphaned-references jobs, got 'pg-purge' "
        "(status reads a ttl-monitor job's table; --postgres runs PostgreSQL purges)",
    ]


class FakeLambda:
    """ListFunctions and GetFunctionConfiguration of functions with the given EXPIRY_JOB values."""

    def __init__(self, jobs: dict[str, dict[str, Any]]) -> None:
        self.functions = {
            name: {"FunctionName": name, "Environment": {"Variables": {"EXPIRY_JOB": json.dumps(job)}}}
            for name, job in jobs.items()
        }

    def get_paginator(self, operation: str) -> Any:
        assert operation == "list_functions"
        pages = [{"Functions": list(self.functions.values())}]
        return type("Paginator", (), {"paginate": lambda _self: pages})()

    def get_function_configuration(self, FunctionName: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        return self.functions[FunctionName]


def test_the_deployed_guard_finds_a_function_not_yet_updated_from_0_3():
    client = FakeLambda(
        {"old": {**OLD_SWEEP, "hook": False}, "new": NEW_SWEEP, "other": {**NEW_SWEEP, "table_name": "u"}}
    )
    with pytest.warns(SettingsDeprecationWarning, match="--function old .*name is 0.3's spelling of job_name"):
        found = deployed_jobs(client, "t", "sweep")
    assert sorted(d.function for d in found) == ["new", "old"]
