"""What a cleanup owns in the database: each object it creates carries the job's marker; a name taken by an
object without it is refused before anything is written, and only marked objects are ever dropped."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from expiry.runtime.postgres.catalog import has_index, one_row
from expiry.runtime.postgres.spec import CREATED_BY, CleanupError, PurgeSpec, cron_command, owned_marker


@contextlib.contextmanager
def scheduling_role(cron: psycopg.Connection, spec: PurgeSpec) -> Iterator[None]:
    """Inside a transaction: with ``run_as``, act as it (SET LOCAL ROLE) on pg_cron's jobs, which pg_cron
    keys by name and role and runs as their role; back to the connected role after."""
    if spec.run_as is None:
        yield
        return
    cron.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(spec.run_as)))
    yield
    cron.execute("RESET ROLE")


RELATION_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "f": "foreign table",
    "c": "composite type",
}
ROUTINE_KINDS = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window function"}


@dataclass
class Owned:
    """This cleanup's objects that exist already, each marked as its own: relations by (schema, name),
    whether its procedure exists, and its pg_cron jobs by name."""

    relations: set[tuple[str, str]] = field(default_factory=set)
    procedure: bool = False
    jobs: set[str] = field(default_factory=set)


def claim_relations(conn: psycopg.Connection, spec: PurgeSpec, names: list[tuple[str, str]], owned: Owned) -> list[str]:
    """Add the relations of ``names`` (schema, name) that carry the job's marker to ``owned``; describe the others."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, c.relkind, coalesce(obj_description(c.oid, 'pg_class') = %s, false), "
        "quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (owned_marker(spec.job_name), [schema for schema, _ in names], [name for _, name in names]),
    ).fetchall()
    owned.relations |= {(schema, name) for schema, name, _, ours, _ in rows if ours}
    return [f"{RELATION_KINDS.get(kind, 'relation')} {shown}" for _, _, kind, ours, shown in rows if not ours]


def claim(conn: psycopg.Connection, cron: psycopg.Connection, spec: PurgeSpec) -> Owned:
    """What of the cleanup's objects exists already, each of it marked as this job's: a name taken by an
    object without the marker (the user's table, procedure or pg_cron job, or another cleanup's) is a
    CleanupError that names them all, raised before anything is written."""
    owned, marker = Owned(), owned_marker(spec.job_name)
    names = [(spec.schema, spec.job_name + suffix) for suffix in ("_log", "_batches", "_status")]
    if spec.archive:
        names += [(spec.schema, f"{spec.job_name}_archive"), (spec.schema, f"{spec.job_name}_archive_at")]
    if spec.create_index and not has_index(conn, spec):
        names.append((spec.table_schema, spec.index_name))
    runs = [(spec.schema, f"{spec.job_name}_runs")]
    foreign = claim_relations(conn, spec, names + runs if cron is conn else names, owned)
    if cron is not conn:
        foreign += claim_relations(cron, spec, runs, owned)
    for shown, kind, ours in conn.execute(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || "
        "pg_get_function_identity_arguments(p.oid) || ')', p.prokind, "
        "coalesce(obj_description(p.oid, 'pg_proc') = %s, false) FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s AND p.proname = %s ORDER BY 1",
        (marker, spec.schema, spec.job_name),
    ).fetchall():
        owned.procedure |= ours
        foreign += [] if ours else [f"{ROUTINE_KINDS.get(kind, 'routine')} {shown}"]
    if one_row(cron.execute("SELECT to_regclass('cron.job') IS NOT NULL"))[0]:
        with cron.transaction(), scheduling_role(cron, spec):
            jobs = cron.execute(
                "SELECT jobname, username, starts_with(command, %s) FROM cron.job "
                "WHERE jobname = ANY(%s) AND username = current_user ORDER BY jobname",
                (cron_command(spec.job_name, ""), [spec.job_name, spec.history_job]),
            ).fetchall()
        owned.jobs = {name for name, _, ours in jobs if ours}
        foreign += [f"pg_cron job {name!r} of role {role!r}" for name, role, ours in jobs if not ours]
    if foreign:
        raise CleanupError(
            f"job {spec.job_name!r}: in the way of what it creates, and not created by Expiry for this job (no "
            f"marker {marker!r}): {', '.join(foreign)}; nothing was changed. Choose another job_name or schema, "
            "or rename what is in the way"
        )
    return owned


def mark(conn: psycopg.Connection, spec: PurgeSpec, kind: str, name: sql.Composable) -> None:
    """Mark a new object as this cleanup's own (COMMENT ON ``kind`` ``name``)."""
    conn.execute(
        sql.SQL("COMMENT ON {} {} IS {}").format(sql.SQL(kind), name, sql.Literal(owned_marker(spec.job_name)))
    )


def own_schema(conn: psycopg.Connection, spec: PurgeSpec) -> bool:
    """Create the cleanup's schema (marked as ours) when missing; whether it was created."""
    if one_row(conn.execute("SELECT to_regnamespace(quote_ident(%s)) IS NOT NULL", (spec.schema,)))[0]:
        return False
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(spec.schema)))
    conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(sql.Identifier(spec.schema), sql.Literal(CREATED_BY)))
    return True


def create_archive(conn: psycopg.Connection, spec: PurgeSpec, owned: Owned) -> None:
    """<job>_archive: each purged row as jsonb, with when and by which run (NULL: a client purge), and its
    index; each created and marked unless this cleanup owns it already."""
    archive = spec.ident("_archive")
    if (spec.schema, f"{spec.job_name}_archive") not in owned.relations:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (archived_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
                "run_id bigint, row_data jsonb NOT NULL)"
            ).format(archive)
        )
        mark(conn, spec, "TABLE", archive)
    if (spec.schema, f"{spec.job_name}_archive_at") not in owned.relations:
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} (archived_at)").format(
                sql.Identifier(f"{spec.job_name}_archive_at"), archive
            )
        )
        mark(conn, spec, "INDEX", spec.ident("_archive_at"))


def drop_if_ours(conn: psycopg.Connection, spec: PurgeSpec, kind: str, name: sql.Composable) -> None:
    """DROP ``kind`` ``name`` if it exists and carries this job's marker."""
    find, catalog = ("to_regprocedure", "pg_proc") if kind == "PROCEDURE" else ("to_regclass", "pg_class")
    ours = one_row(
        conn.execute(
            sql.SQL("SELECT obj_description({}(%s), %s) = %s").format(sql.SQL(find)),
            (name.as_string(conn), catalog, owned_marker(spec.job_name)),
        )
    )[0]
    if ours:
        conn.execute(sql.SQL("DROP {} {}").format(sql.SQL(kind), name))


def schema_is_ours(conn: psycopg.Connection, spec: PurgeSpec) -> bool:
    """Whether Expiry created the cleanup's schema (its comment says so)."""
    ours = conn.execute(
        "SELECT obj_description(oid, 'pg_namespace') = %s FROM pg_namespace WHERE nspname = %s",
        (CREATED_BY, spec.schema),
    ).fetchone()
    return bool(ours and ours[0])


def drop_schema_if_ours(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    if schema_is_ours(conn, spec):
        with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):  # other cleanups still live in it
            conn.execute(sql.SQL("DROP SCHEMA {} RESTRICT").format(sql.Identifier(spec.schema)))
