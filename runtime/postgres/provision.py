"""PgCronCleanup's VPC mode: the same provisioning as the dynamic provider, run by a Lambda inside the
database's VPC and invoked by aws.lambda_.Invocation with a CRUD lifecycle. The payload carries the
cleanup and where the database is; the password comes from Secrets Manager."""

from collections.abc import Callable
from typing import Any

from expiry.runtime.jobs.config import JobConfigError, Postgres
from expiry.runtime.postgres.cleanup import CleanupError, PurgeSpec, provision, unprovision
from expiry.runtime.postgres.connection import connector

TERRAFORM_KEY = "tf"
# A change of these makes another job or table (pg_cron keys a job by name and role): the old one is removed first.
IDENTITY = ("job_name", "table", "table_schema", "schema", "run_as")


def _parse(payload: dict[str, Any]) -> tuple[PurgeSpec, Postgres]:
    try:
        spec = PurgeSpec.from_dict(payload["cleanup"])
        raw = payload["connection"]
        postgres = Postgres(
            host=raw["host"],
            port=int(raw.get("port", 5432)),
            database=raw["database"],
            secret_arn=raw["secret_arn"],
            user=raw.get("user"),
            lookback_seconds=3600,
        )
    except KeyError as error:
        raise JobConfigError(f"payload: missing {error}; expected cleanup and connection") from error
    except TypeError as error:
        raise JobConfigError(f"payload: cleanup: {error}") from error
    except CleanupError as error:
        raise JobConfigError(f"payload: cleanup.{error}") from error
    return spec, postgres


def handle(event: dict[str, Any], secrets_client: Callable[[], Any]) -> dict[str, Any]:
    """Create, update or delete the cleanup the event describes; return what provisioning reports."""
    lifecycle = event.get(TERRAFORM_KEY) or {"action": "create", "prev_input": None}
    action = lifecycle.get("action")
    spec, postgres = _parse(event)
    secrets = secrets_client()
    if action == "delete":
        unprovision(connector(secrets, postgres), spec)
        return {"action": "delete", "job_name": spec.job_name}
    if action not in ("create", "update"):
        raise JobConfigError(f"payload: {TERRAFORM_KEY}.action: must be create, update or delete, got {action!r}")
    previous = lifecycle.get("prev_input")
    if action == "update" and previous:
        old_spec, old_postgres = _parse(previous)
        moved = any(getattr(old_spec, key) != getattr(spec, key) for key in IDENTITY) or (
            (old_postgres.host, old_postgres.port, old_postgres.database)
            != (postgres.host, postgres.port, postgres.database)
        )
        if moved:
            unprovision(connector(secrets, old_postgres), old_spec)
    return {"action": action, **provision(connector(secrets, postgres), spec)}
