"""The deployed job's rules hold for ad-hoc sweeps too (issue 19).

A sweep built from --table and --s3-* flags (or --job) knows none of the rules of the sweeper deployed on
the same table: kept statuses, the stuck rule, orphans, ownership, the breaker. Before it deletes anything,
the CLI finds the deployed sweep jobs of that table (Lambda ListFunctions, then each EXPIRY_JOB read as
--function reads it), plans each of them on the same data with the same clock, and refuses the ad-hoc plan
when it would delete, abort or mark partial anything no deployed job would, or would delete an item whose
object a deployed job marks kept without marking it (a later orphan pass would take it for an orphan).
Rails the plan cannot show are compared setting by setting: a breaker looser than a deployed job's is refused.
"""

import dataclasses
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from botocore.exceptions import ClientError

from expiry.runtime.dynamodb.items import plain
from expiry.runtime.dynamodb.saved_plan import settings
from expiry.runtime.dynamodb.sweep import Plan, Sweeper
from expiry.runtime.jobs.config import ENV_VAR, Job, current_schema, loads_object, parse_job
from expiry.runtime.jobs.run_control import Tally

OVERRIDE = "--ignore-deployed"
DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException")
# How a run reads and goes, not what it decides: the deployed job is planned with the ad-hoc job's values.
RUN_SHAPE = (
    "name",
    "namespace",
    "dry_run",
    "max_items",
    "workers",
    "scan_segments",
    "safety_margin_seconds",
    "sample_size",
    "page_size",
    "expiry_index",
    "unindexed_check_items",
    "plan_sample_size",
)
SHOWN = 3  # things named in a refusal


class LookupDeniedError(Exception):
    """Listing or reading the deployed functions was denied: the message names the permission."""


@dataclass(frozen=True)
class Deployed:
    function: str
    job: Job


def job_text(configuration: dict[str, Any]) -> str | None:
    """The job settings (EXPIRY_JOB) in a Lambda function's configuration, if it has any."""
    text = (configuration.get("Environment") or {}).get("Variables", {}).get(ENV_VAR)
    return cast(str, text) if text else None


def _raise_denied(error: ClientError, permission: str, table: str) -> None:
    """LookupDeniedError, naming ``permission``, when ``error`` is a denial."""
    if error.response.get("Error", {}).get("Code") not in DENIED:
        return
    raise LookupDeniedError(
        f"cannot check what the deployed sweep jobs of {table} keep: {permission} was denied "
        f"({error.response['Error']['Code']}); grant {permission}, run the deployed job with --function NAME, "
        f"or give {OVERRIDE}; nothing was deleted"
    ) from error


def deployed_jobs(lambda_client: Any, table: str, kind: str) -> list[Deployed]:
    """The deployed jobs of ``kind`` whose table is ``table``, each read from its function's configuration
    (GetFunctionConfiguration, as --function reads it). A function whose listed environment has no
    EXPIRY_JOB is skipped; a job of this table that does not parse is an error (exit 2), not skipped."""
    found: list[Deployed] = []
    try:
        listed = [f for page in lambda_client.get_paginator("list_functions").paginate() for f in page["Functions"]]
    except ClientError as error:
        _raise_denied(error, "lambda:ListFunctions", table)
        raise
    for function in listed:
        name = function["FunctionName"]
        if "Environment" in function and not job_text(function):
            continue  # its environment, as listed, holds no job
        try:
            text = job_text(lambda_client.get_function_configuration(FunctionName=name))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                continue  # deleted since it was listed
            _raise_denied(error, "lambda:GetFunctionConfiguration", table)
            raise
        if not text:
            continue
        source = f"--function {name} (deployed on {table})"
        raw = current_schema(loads_object(text, source), source)  # a function not yet updated from 0.3
        if isinstance(raw, dict) and raw.get("table_name") == table and raw.get("kind") == kind:
            found.append(Deployed(name, parse_job(raw, source=source)))
    return found


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        leaves: dict[str, Any] = {}
        for name, inner in value.items():
            leaves |= _leaves(inner, f"{prefix}.{name}" if prefix else name)
        return leaves
    return {prefix: value}


def setting_differences(adhoc: Job, deployed: Job) -> list[str]:
    """The settings (dotted names) in which the two jobs decide differently; how a run reads is not one. A
    section one job has and the other has not is named whole."""
    mine, theirs = ({k: v for k, v in settings(job).items() if k not in RUN_SHAPE} for job in (adhoc, deployed))
    names: list[str] = []
    for section in dict.fromkeys([*theirs, *mine]):
        a, d = mine.get(section), theirs.get(section)
        if (a is None) != (d is None):
            names.append(section)
            continue
        leaves_a, leaves_d = _leaves(a, section), _leaves(d, section)
        names += [name for name in dict.fromkeys([*leaves_d, *leaves_a]) if leaves_a.get(name) != leaves_d.get(name)]
    return names


def looser_breaker(adhoc: Job, deployed: Job) -> list[str]:
    """The breaker settings in which the ad-hoc job refuses less than the deployed one."""
    a, d = adhoc.breaker, deployed.breaker
    looser = []
    if a.max_share > d.max_share:
        looser.append("breaker.max_share")
    if d.max_count is not None and (a.max_count is None or a.max_count > d.max_count):
        looser.append("breaker.max_count")
    if a.ignore_below > d.ignore_below:
        looser.append("breaker.ignore_below")
    if a.allow_mass_deletion and not d.allow_mass_deletion:
        looser.append("breaker.allow_mass_deletion")
    if a.budget_table != d.budget_table:
        looser.append("breaker.budget_table")  # the table's deletions counted in another ledger, or none
    elif d.budget_table and a.window_seconds < d.window_seconds:
        looser.append("breaker.window_seconds")
    return looser


def plan_deployed(job: Job, adhoc: Job, clients: Callable[[str], Any], now: float, stop: Callable[[], bool]) -> Plan:
    """The deployed ``job``'s plan at ``now``, read the way ``adhoc`` reads (its index, its item limit)."""
    shaped = dataclasses.replace(job, **{name: getattr(adhoc, name) for name in RUN_SHAPE} | {"dry_run": True})
    s3 = clients("s3") if shaped.s3 else None
    with ThreadPoolExecutor(max_workers=shaped.workers) as pool:
        sweeper = Sweeper(shaped, clients("dynamodb"), s3, now, stop, Tally())
        sweeper.pool = pool
        return sweeper.plan()


def _item(job: Job, image: dict[str, Any]) -> str:
    return json.dumps(plain({name: image[name] for name in job.key_attributes}), sort_keys=True, default=str)


def _effects(job: Job, plan: Plan) -> dict[str, set[Any]]:
    """What a plan does, each thing named so that two jobs' plans compare: items by key, objects and uploads
    by bucket and key; "marked": the objects it marks kept, with the item it deletes."""
    bucket = job.s3.bucket if job.s3 else None
    effects: dict[str, set[Any]] = {name: set() for name in ("item", "partial", "object", "upload", "marked")}
    for d in plan.decisions:
        item = _item(job, d.image)
        if d.delete:
            effects["item"].add(item)
        if d.mark_partial:
            effects["partial"].add(item)
        if d.delete_object:
            effects["object"].add((bucket, d.object_key))
        if d.abort_upload:
            effects["upload"].add((bucket, d.object_key, d.abort_upload))
        if d.mark_object:
            effects["marked"].add((item, bucket, d.object_key))
    effects["object"] |= {(bucket, key) for key in plan.orphans}
    effects["upload"] |= {(bucket, key, upload) for key, upload in plan.orphan_uploads}
    return effects


def plan_conflicts(adhoc: Job, plan: Plan, deployed: Iterable[tuple[Job, Plan]]) -> list[str]:
    """What the ad-hoc ``plan`` would do that no deployed job's plan does, as shown to the operator: an item
    deleted or marked partial, an object deleted, an upload aborted; and an item deleted whose object a
    deployed job marks kept while the ad-hoc plan does not (once the item is gone, the unmarked object would
    be taken for an orphan)."""
    mine = _effects(adhoc, plan)
    allowed: dict[str, set[Any]] = {name: set() for name in mine}
    for job, theirs in deployed:
        if job.dry_run or job.hook:
            continue  # deletes nothing, or decides with a hook the CLI cannot run: allows nothing
        effects = _effects(job, theirs)
        for name in allowed:
            allowed[name] |= effects[name]
    conflicts = [f"item {item}" for item in sorted(mine["item"] - allowed["item"])]
    conflicts += [f"item {item} (marked partial)" for item in sorted(mine["partial"] - allowed["partial"])]
    conflicts += [f"object s3://{b}/{k}" for b, k in sorted(mine["object"] - allowed["object"], key=str)]
    conflicts += [f"upload {u} of s3://{b}/{k}" for b, k, u in sorted(mine["upload"] - allowed["upload"], key=str)]
    for item, bucket, key in sorted(allowed["marked"], key=str):
        if item in mine["item"] and (item, bucket, key) not in mine["marked"] and (bucket, key) not in mine["object"]:
            conflicts.append(f"object s3://{bucket}/{key} (its item deleted, the object not marked kept)")
    return list(dict.fromkeys(conflicts))


def refusal(adhoc: Job, plan: Plan | None, deployed: list[tuple[Deployed, Plan | None]]) -> str | None:
    """Why the ad-hoc run must not go on, in one line, or None when it deletes nothing a deployed job keeps.
    Without a plan (a job kind that plans no sweep), any difference in settings is a refusal."""
    if not deployed:
        return None
    names = ", ".join(d.function for d, _ in deployed)
    fields: list[str] = []
    for d, _ in deployed:
        fields += setting_differences(adhoc, d.job)
        fields += looser_breaker(adhoc, d.job)
        fields += ["dry_run"] if d.job.dry_run else []
        fields += ["hook"] if d.job.hook else []
    fields = list(dict.fromkeys(fields))
    breaker = [name for d, _ in deployed for name in looser_breaker(adhoc, d.job)]
    if plan is None or any(p is None for _, p in deployed):
        things = ["what it deletes (no plan to compare)"] if fields else []
    else:
        things = plan_conflicts(adhoc, plan, [(d.job, cast(Plan, p)) for d, p in deployed])
    if not things and not breaker:
        return None
    shown = "; ".join(things[:SHOWN]) + (f"; and {len(things) - SHOWN} more" if len(things) > SHOWN else "")
    what = f"it would delete what the deployed job keeps: {shown}" if things else "its breaker is looser"
    suggestion = " or ".join(f"--function {d.function}" for d, _ in deployed)
    return (
        f"this sweep is not the deployed job of {adhoc.table} ({names}): {what}; "
        f"settings that differ: {', '.join(fields) or '(none: the data differs)'}; "
        f"run the deployed job with {suggestion}, or give {OVERRIDE}"
    )
