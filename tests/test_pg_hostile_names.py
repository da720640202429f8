"""A property of PgCronCleanup's provisioning on a real PostgreSQL 15 with pg_cron: whatever objects
already hold its names (tables, views, indexes, procedures and functions, pg_cron jobs; names with
quotes, dots, spaces, unicode and mixed case), provisioning refuses exactly when a name is taken and
otherwise leaves every existing object as it was, and unprovisioning never drops or alters an object
Expiry did not mark."""

import contextlib
from typing import Any

import hypothesis.strategies as st
import psycopg
from hypothesis import HealthCheck, Phase, given, settings
from psycopg import sql

from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.spec import MAX_JOB_NAME, CleanupError, PurgeSpec, cron_command, owned_marker

CHARACTERS = [*"aAzZ09_-. \"'*/%;", "é", "ß", "Ω", "日", "🙂"]
NAMES = st.text(st.sampled_from(CHARACTERS), min_size=1, max_size=10).filter(
    lambda name: len(name.encode()) <= MAX_JOB_NAME
)
SCHEMAS = st.one_of(
    st.sampled_from(["public", "expiry"]),
    NAMES.filter(lambda name: not name.startswith("pg_") and name not in ("public", "expiry", "cron")),
)
# Objects that take one of the cleanup's names (archive ones only with archive, the index only with
# create_index), and near misses that do not.
TAKING = (
    "log",
    "batches",
    "status",
    "archive",
    "archive_at",
    "procedure",
    "procedure_without_arguments",
    "function",
    "cron_job",
    "cron_history_job",
    "runs",
    "index",
    "target_is_log",
)
NEAR_MISSES = ("log_in_capitals", "log_in_another_schema")
SYSTEM = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'cron') AND n.nspname NOT LIKE 'pg\\_toast%'"


def catalog(conn: psycopg.Connection) -> dict[tuple[str, ...], Any]:
    """Every object outside the system schemas as it is: schemas (owner, comment, privileges); relations
    (kind, columns, rows, view or index definition, comment, privileges); routines (definition, comment,
    privileges)."""
    found: dict[tuple[str, ...], Any] = {}
    for name, owner, comment, acl in conn.execute(
        f"SELECT n.nspname, n.nspowner::regrole::text, obj_description(n.oid, 'pg_namespace'), n.nspacl::text "
        f"FROM pg_namespace n WHERE {SYSTEM}"
    ).fetchall():
        found[("schema", name)] = (owner, comment, acl)
    relations = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind, obj_description(c.oid, 'pg_class'), c.relacl::text, "
        "CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid) WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) "
        f"END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {SYSTEM}"
    ).fetchall()
    for oid, schema, name, kind, comment, acl, definition in relations:
        columns = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (oid,),
        ).fetchall()
        rows = None
        if kind in ("r", "p", "v", "m", "S"):
            row = sql.SQL("(last_value, is_called)" if kind == "S" else "t")
            query = sql.SQL("SELECT {}::text FROM {} t").format(row, sql.Identifier(schema, name))
            rows = sorted(row[0] for row in conn.execute(query).fetchall())
        found[("relation", schema, name)] = (kind, columns, rows, definition, comment, acl)
    for schema, name, arguments, definition, comment, acl in conn.execute(
        "SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid), "
        f"obj_description(p.oid, 'pg_proc'), p.proacl::text FROM pg_proc p "
        f"JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {SYSTEM}"
    ).fetchall():
        found[("routine", schema, name, arguments)] = (definition, comment, acl)
    return found


def cron_jobs(cron: psycopg.Connection) -> dict[int, tuple]:
    return {
        row[0]: row[1:]
        for row in cron.execute(
            "SELECT jobid, jobname, schedule, command, database, username, active FROM cron.job"
        ).fetchall()
    }


def unchanged(before: dict, after: dict) -> list:
    """What of ``before`` is gone or different in ``after``."""
    return [(key, value, after.get(key)) for key, value in before.items() if after.get(key) != value]


def marked(conn: psycopg.Connection, job_name: str) -> list[str]:
    """The names of the objects that carry the job's marker."""
    rows = conn.execute(
        "SELECT coalesce(c.relname, p.proname, d.objoid::text) FROM pg_description d "
        "LEFT JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND c.oid = d.objoid "
        "LEFT JOIN pg_proc p ON d.classoid = 'pg_proc'::regclass AND p.oid = d.objoid WHERE d.description = %s",
        (owned_marker(job_name),),
    ).fetchall()
    return sorted(row[0] for row in rows)


class World:
    """A fresh database with the user's table public.items and the hostile objects asked for, there and
    in pg_cron's database; ``close`` removes what it made in pg_cron's database and the database."""

    def __init__(self, postgres: Any, job: str, schema: str, objects: frozenset[str], schema_exists: bool) -> None:
        self.postgres, self.job, self.schema = postgres, job, schema
        self.database = postgres.new_database("hostile")
        self.cron_schema_made = False
        self.job_ids: list[int] = []
        self.table, self.table_schema = "items", "public"
        other = "elsewhere" if schema == "public" else "public"
        with postgres.connect(self.database) as conn:
            conn.execute("CREATE TABLE items (id serial PRIMARY KEY, expires_at bigint, note text)")
            conn.execute(
                "INSERT INTO items (expires_at, note) SELECT extract(epoch from now())::bigint + g * 600, 'row ' || g "
                "FROM generate_series(-3, 3) g"
            )
            if schema_exists or objects - {"index", "cron_job", "cron_history_job", "runs", "log_in_another_schema"}:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(other)))
            if "target_is_log" in objects:  # the purged table is <job>_log itself: made first, indexed after
                objects = objects - {"log"}
            for kind in sorted(objects, key=lambda kind: kind != "target_is_log"):
                self._make(conn, kind, other)
        with postgres.connect() as cron:
            cron.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
            if "runs" in objects:
                self.cron_schema_made = cron.execute(
                    "SELECT to_regnamespace(quote_ident(%s)) IS NULL", (schema,)
                ).fetchone()[0]
                cron.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                cron.execute(sql.SQL("CREATE VIEW {} AS SELECT 1 AS run").format(self.name("_runs")))
            if "cron_job" in objects:
                self._schedule(cron, job, f"SELECT 1 -- {job}", self.database)
            if "cron_history_job" in objects:
                self._schedule(cron, f"{job}-history", "SELECT 2", "postgres")

    def name(self, suffix: str = "", schema: str | None = None) -> sql.Identifier:
        return sql.Identifier(schema or self.schema, self.job + suffix)

    def _schedule(self, cron: psycopg.Connection, job: str, command: str, database: str) -> None:
        query = "SELECT cron.schedule_in_database(%s, '0 0 1 1 *', %s, %s)"
        self.job_ids.append(cron.execute(query, (job, command, database)).fetchone()[0])

    def _make(self, conn: psycopg.Connection, kind: str, other: str) -> None:
        rows = "(id int PRIMARY KEY, what text); INSERT INTO {} VALUES (1, 'mine'), (2, 'also mine')"
        table = {
            "log": self.name("_log"),
            "batches": self.name("_batches"),
            "log_in_capitals": self.name("_LOG"),
            "log_in_another_schema": self.name("_log", other),
        }
        if kind in table:
            conn.execute(sql.SQL("CREATE TABLE {} " + rows).format(table[kind], table[kind]))
        elif kind == "target_is_log":
            target = self.name("_log")
            conn.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, expires_at bigint)").format(target))
            conn.execute(sql.SQL("INSERT INTO {} (expires_at) VALUES (1), (NULL), (9999999999)").format(target))
            self.table, self.table_schema = self.job + "_log", self.schema
        elif kind == "status":
            conn.execute(sql.SQL("CREATE VIEW {} AS SELECT note FROM public.items").format(self.name("_status")))
        elif kind == "archive":  # columns an archive would have, and rows
            archive = self.name("_archive")
            conn.execute(
                sql.SQL("CREATE TABLE {} (archived_at timestamptz, run_id bigint, row_data jsonb)").format(archive)
            )
            conn.execute(sql.SQL("INSERT INTO {} VALUES (now(), 1, '{{\"mine\": true}}')").format(archive))
        elif kind == "archive_at":
            base = sql.Identifier(self.schema, "base table")
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (x int)").format(base))
            conn.execute(sql.SQL("CREATE INDEX {} ON {} (x)").format(sql.Identifier(self.job + "_archive_at"), base))
        elif kind == "procedure":
            conn.execute(
                sql.SQL("CREATE PROCEDURE {}(a integer, b integer) LANGUAGE sql AS $$ SELECT a + b $$").format(
                    self.name()
                )
            )
        elif kind == "procedure_without_arguments":
            conn.execute(sql.SQL("CREATE PROCEDURE {}() LANGUAGE sql AS $$ SELECT 1 $$").format(self.name()))
        elif kind == "function":
            conn.execute(
                sql.SQL("CREATE FUNCTION {}(t text) RETURNS text LANGUAGE sql AS $$ SELECT t $$").format(self.name())
            )
        elif kind == "index":  # on the purged table, not on its expiry column
            conn.execute(
                sql.SQL("CREATE INDEX {} ON {} (id)").format(
                    sql.Identifier(self.job + "_expiry_idx"), sql.Identifier(self.table_schema, self.table)
                )
            )

    def close(self) -> None:
        with self.postgres.connect() as cron:
            for job_id in self.job_ids:
                cron.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE jobid = %s", (job_id,))
            if self.cron_schema_made:
                cron.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(self.schema)))
            else:
                cron.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(self.name("_runs")))
            cron.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(self.database)))


@settings(
    max_examples=25,
    deadline=None,
    phases=(Phase.reuse, Phase.generate, Phase.shrink),  # no explain phase: minutes of reruns on a failure
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    job=NAMES,
    schema=SCHEMAS,
    objects=st.frozensets(st.sampled_from(TAKING + NEAR_MISSES), max_size=4),
    archive=st.booleans(),
    create_index=st.booleans(),
    schema_exists=st.booleans(),
)
def test_provisioning_refuses_or_leaves_every_existing_object_as_it_was(
    postgres, job, schema, objects, archive, create_index, schema_exists
):
    world = World(postgres, job, schema, objects, schema_exists)
    spec = PurgeSpec(
        job_name=job,
        table=world.table,
        table_schema=world.table_schema,
        expiry_column="expires_at",
        schema=schema,
        archive=archive,
        create_index=create_index,
    )
    try:
        ignored = ({"archive", "archive_at"} if not archive else set()) | ({"index"} if not create_index else set())
        taken = (objects & set(TAKING)) - ignored
        connector = Connector(postgres.dsn(world.database), world.database)
        with postgres.connect(world.database) as conn, postgres.connect() as cron:
            before, jobs_before = catalog(conn), cron_jobs(cron)
            cron_before = catalog(cron)
            refused = None
            try:
                provision(connector, spec)
            except CleanupError as error:
                refused = str(error)
            assert (refused is not None) == bool(taken), (taken, refused)
            assert unchanged(before, catalog(conn)) == []
            assert unchanged(cron_before, catalog(cron)) == []
            assert unchanged(jobs_before, cron_jobs(cron)) == []
            if refused:
                assert marked(conn, job) == [] and marked(cron, job) == []
                assert set(cron_jobs(cron)) == set(jobs_before)
            unprovision(connector, spec)
            assert unchanged(before, catalog(conn)) == []
            assert unchanged(cron_before, catalog(cron)) == []
            assert unchanged(jobs_before, cron_jobs(cron)) == []
            kept = sorted([f"{job}_archive", f"{job}_archive_at"]) if archive and not refused else []
            assert marked(conn, job) == kept and marked(cron, job) == []  # destroy keeps the archive's rows
            prefix = cron_command(job, "")
            assert [j for j in cron_jobs(cron).values() if j[2].startswith(prefix)] == []
    finally:
        with contextlib.suppress(psycopg.Error):
            unprovision(Connector(postgres.dsn(world.database), world.database), spec)
        world.close()
