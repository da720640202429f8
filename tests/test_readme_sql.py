"""README's least-privilege SQL, run as written on a fresh PostgreSQL with pg_cron preloaded (no
extension created yet, as on a new RDS instance), then used: the role it makes provisions, runs and
removes a purge without superuser."""

import re
from collections.abc import Iterator

import psycopg
import pytest
from docs_pages import section
from postgres import PostgresServer

from expiry.runtime.postgres.connection import Connector
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.spec import PurgeSpec


def least_privilege_sql() -> list[tuple[str, str]]:
    """(database, statement) of the first ```sql block under "Least privilege" (docs/pg-cron-cleanup.md); each
    statement runs in the database named by the last `-- in database NAME` comment above it."""
    _, text = section("Least privilege")
    block = re.search(r"^```sql\n(.*?)^```", text, re.S | re.M)
    assert block, "README: no sql block under Least privilege"
    database, statements = None, []
    for line in block.group(1).splitlines():
        where = re.match(r"\s*-- in database (\w+)", line)
        if where:
            database = where.group(1)
            continue
        code = line.split("--", 1)[0].strip()
        if code:
            assert database, f"README: {code!r} comes before any '-- in database' comment"
            assert code.endswith(";"), f"README: one statement per line, got {code!r}"
            statements.append((database, code))
    return statements


@pytest.fixture(scope="module")
def fresh_server() -> Iterator[PostgresServer]:
    """Its own server: the session's `postgres` has had pg_cron created by other tests."""
    server = PostgresServer(with_pg_cron=True)
    yield server
    server.stop()


def test_the_readme_block_names_its_databases():
    databases = {database for database, _ in least_privilege_sql()}
    assert databases == {"postgres", "app"}, databases


def test_the_least_privilege_sql_runs_as_written_and_is_enough(fresh_server):
    fresh_server.create_database("app")
    with fresh_server.connect("app") as conn:  # the application's table, which the README assumes
        conn.execute("CREATE TABLE public.attributes (id serial PRIMARY KEY, ttl_timestamp bigint)")
        conn.execute(
            "INSERT INTO attributes (ttl_timestamp) SELECT extract(epoch from now())::bigint - g "
            "FROM generate_series(1, 5) g"
        )
        conn.execute("INSERT INTO attributes (ttl_timestamp) VALUES (extract(epoch from now())::bigint + 3600)")
    with fresh_server.connect() as conn:
        assert conn.execute("SELECT to_regnamespace('cron') IS NULL").fetchone()[0], "not a fresh server"
    for database, statement in least_privilege_sql():
        with fresh_server.connect(database) as conn:
            conn.execute(statement)  # as the superuser the README asks for

    dsn = f"host=127.0.0.1 port={fresh_server.port} dbname=app user=expiry"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
    spec = PurgeSpec(job_name="purge-attributes", table="attributes", expiry_column="ttl_timestamp")
    state = provision(Connector(dsn, "app"), spec)
    with fresh_server.connect() as cron:
        job = cron.execute("SELECT username, database FROM cron.job WHERE jobid = %s", (state["job_id"],))
        assert job.fetchone() == ("expiry", "app")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(spec.command)
        assert conn.execute("SELECT count(*) FROM attributes").fetchone() == (1,)
    unprovision(Connector(dsn, "app"), spec)
