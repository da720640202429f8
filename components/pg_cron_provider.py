"""The Pulumi dynamic provider behind PgCronCleanup: runs expiry.runtime.postgres.provision with psycopg from the
deploying machine. The engine unpickles it (with dill) in its own process; the venv must be able to
import `expiry` (`make setup` installs the project into it)."""

from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.spec import PurgeSpec

SPEC_KEYS = tuple(PurgeSpec.__dataclass_fields__)
CONNECTION_KEYS = ("host", "port", "database", "user", "password", "dsn")
PROVISIONING_KEY = "provisioning"  # the digest of the provisioning code: a new one provisions again
# Changing these means another job, procedure or table: replace (drop the old, create the new). pg_cron
# keys a job by name and role, so another run_as is another job too.
REPLACE_KEYS = (
    "job_name",
    "table",
    "table_schema",
    "schema",
    "expiry_column",
    "run_as",
    "host",
    "port",
    "database",
    "dsn",
)
STATE_KEYS = (
    "cron_database",
    "column_kind",
    "job_id",
    "history_job_id",
    "created_schema",
    "created_index",
    "expiry_column_indexed",
)


def connector_from(props: dict[str, Any]) -> Connector:
    """A Connector from the resource's connection inputs (a DSN, or host/port/database/user/password)."""
    if props.get("dsn"):
        conninfo = props["dsn"]
    else:
        conninfo = make_conninfo(
            "",
            host=props.get("host"),
            port=_whole(props.get("port")),
            dbname=props.get("database"),
            user=props.get("user"),
            password=props.get("password"),
        )
    database = conninfo_to_dict(conninfo).get("dbname") or props.get("database") or "postgres"
    return Connector(conninfo, str(database))


def _whole(value: Any) -> Any:
    """The engine hands numbers over as floats; whole ones go back to int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def spec_from(props: dict[str, Any]) -> PurgeSpec:
    return PurgeSpec.from_dict({key: _whole(props[key]) for key in SPEC_KEYS if props.get(key) is not None})


class PgCronCleanupProvider(ResourceProvider):
    """Create, diff, update and delete of one pg_cron cleanup."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        connector = connector_from(props)
        spec = spec_from(props)
        state = provision(connector, spec)
        return CreateResult(id_=f"{connector.database}/{spec.job_name}", outs={**props, **state})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        inputs = (*SPEC_KEYS, *CONNECTION_KEYS, PROVISIONING_KEY)
        changed = [key for key in inputs if olds.get(key) != news.get(key)]
        replaces = [key for key in changed if key in REPLACE_KEYS]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        state = provision(connector_from(news), spec_from(news))
        state["created_schema"] = bool(olds.get("created_schema")) or state["created_schema"]
        state["created_index"] = bool(olds.get("created_index")) or state["created_index"]
        return UpdateResult(outs={**news, **state})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        unprovision(connector_from(props), spec_from(props))
