"""A real PostgreSQL 15 server for the tests: a temporary data directory, a free loopback port,
pg_cron preloaded (or not), run as the `postgres` user when the tests run as root (initdb refuses root)."""

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from tests_support import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


class PostgresServer:
    """One server; ``stop`` removes its data directory."""

    def __init__(self, with_pg_cron: bool = True, durable: bool = False) -> None:
        if not (BIN / "initdb").exists():
            raise RuntimeError("PostgreSQL 15 is not installed: run `make setup` (installs postgresql-15)")
        self.base = Path(tempfile.mkdtemp(prefix="expiry-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.databases = 0
        if os.geteuid() == 0:
            server_user = pwd.getpwnam("postgres")
            os.chown(self.base, server_user.pw_uid, server_user.pw_gid)
        subprocess.run(
            _as_server_user(
                [
                    str(BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            capture_output=True,
        )
        settings = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.base}'",
            "max_connections = 50",
        ]
        if not durable:  # tests need no crash safety; benchmarks keep PostgreSQL's defaults
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        if with_pg_cron:
            settings += ["shared_preload_libraries = 'pg_cron'", "cron.database_name = 'postgres'"]
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(settings) + "\n")
        subprocess.run(
            _as_server_user(
                [
                    str(BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.base / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        self._wait()

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={database} user=postgres"

    def connect(self, database: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.dsn(database), autocommit=autocommit)

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with self.connect():
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def create_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def new_database(self, prefix: str) -> str:
        """A fresh database of its own, named ``prefix_N`` (one server serves the whole session)."""
        self.databases += 1
        name = f"{prefix}_{self.databases}"
        self.create_database(name)
        return name

    def stop(self) -> None:
        subprocess.run(
            _as_server_user([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def expiring_table(server: PostgresServer, expired: int, delete_ms: int = 0) -> str:
    """A fresh database holding `attributes` (id, ttl_timestamp epoch seconds): ``expired`` rows that
    expired 101 s ago and earlier, one row without expiry and one live for an hour; with ``delete_ms``,
    a trigger makes each delete take that long (a slow disk). Its name."""
    database = server.new_database("expiring")
    with server.connect(database) as conn:
        conn.execute("CREATE TABLE attributes (id serial PRIMARY KEY, ttl_timestamp bigint)")
        conn.execute(
            "INSERT INTO attributes (ttl_timestamp) SELECT extract(epoch from now())::bigint - 100 - g "
            "FROM generate_series(1, %s) g",
            (expired,),
        )
        conn.execute("INSERT INTO attributes (ttl_timestamp) VALUES (NULL), (extract(epoch from now())::bigint + 3600)")
        if delete_ms:
            conn.execute(
                "CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_sleep({delete_ms / 1000}); RETURN OLD; END $$"
            )
            conn.execute("CREATE TRIGGER slow BEFORE DELETE ON attributes FOR EACH ROW EXECUTE FUNCTION slow_delete()")
    return database


def purge_role_grants(role: str, database: str, table: str = "attributes") -> list[tuple[str, str]]:
    """The README's grants for a non-superuser that provisions and runs a purge of ``table`` in
    ``database`` with pg_cron in `postgres`: (database to run it in, statement)."""
    return [
        ("postgres", f'GRANT pg_read_all_settings TO "{role}"'),
        ("postgres", f'GRANT USAGE ON SCHEMA cron TO "{role}"'),
        (
            "postgres",
            f'GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text,text,text,text,text,boolean) TO "{role}"',
        ),
        ("postgres", f'GRANT EXECUTE ON FUNCTION cron.alter_job(bigint,text,text,text,text,boolean) TO "{role}"'),
        ("postgres", f'GRANT CREATE ON DATABASE postgres TO "{role}"'),
        (database, f'GRANT CREATE ON DATABASE "{database}" TO "{role}"'),
        (database, f'GRANT SELECT, DELETE ON "{table}" TO "{role}"'),
    ]


def create_purge_role(server: PostgresServer, role: str, database: str, skip: str | None = None) -> str:
    """A LOGIN role (no superuser) with the README's grants, but for any containing ``skip``;
    returns its connection string to ``database``."""
    with server.connect() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')
    for where, statement in purge_role_grants(role, database):
        if skip is None or skip not in statement:
            with server.connect(where) as conn:
                conn.execute(statement)
    return f"host=127.0.0.1 port={server.port} dbname={database} user={role}"
