"""The purge's batch sizing and index walk, its archive table and its partition-drop mode, on a
real PostgreSQL 15 with pg_cron: live rows kept, the dry run is the run, the breaker applies."""

import json

import psycopg
import pytest
from psycopg import sql
from test_pg_cleanup import blocked_on_a_lock, connector, count, in_background, make_table, named

from expiry.runtime.postgres import statements as cleanup
from expiry.runtime.postgres.provision import provision, unprovision
from expiry.runtime.postgres.purge import plan, purge
from expiry.runtime.postgres.spec import CleanupError, PurgeSpec


@pytest.fixture
def database(postgres):
    return postgres.new_database("modes")


def spec(**overrides) -> PurgeSpec:
    return PurgeSpec(
        **{"job_name": "purge-attributes", "table": "attributes", "expiry_column": "ttl_timestamp", **overrides}
    )


def batch_rows(conn, job: str = "purge-attributes") -> list[tuple[int, int]]:
    return conn.execute(f'SELECT batch_rows, rows_deleted FROM expiry."{job}_batches" ORDER BY batch').fetchall()


def test_batches_grow_toward_the_target_duration_up_to_max_batch_size(postgres, database):
    """A target no batch comes near (60 s): each batch is 4x the one before, up to max_batch_size."""
    adaptive = spec(batch_size=10, target_batch_ms=60_000, max_batch_size=200)
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=1000, live=1000, permanent=3)
        provision(connector(postgres, database), adaptive)
        conn.execute(adaptive.command)
        assert batch_rows(conn) == [(10, 10), (40, 40), (160, 160), (200, 200), (200, 200), (200, 200), (200, 190)]
        assert count(conn) == 1003
        make_table(conn, "timestamptz", expired=1000, live=10, permanent=0, name="more")
        sizes: list[int] = []
        result = purge(
            conn,
            spec(table="more", batch_size=10, target_batch_ms=60_000, max_batch_size=200, allow_mass_deletion=True),
            on_batch=sizes.append,
        )
        assert sizes == [10, 40, 160, 200, 200, 200, 190] and result.rows_deleted == 1000


def test_batches_shrink_when_they_take_longer_than_the_target(postgres, database):
    """Each deleted row sleeps 10 ms: the first batch of 50 takes at least 500 ms against a 100 ms
    target, so the next ones are cut to the floor of 10 rows."""
    adaptive = spec(batch_size=50, target_batch_ms=100)
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=75, live=80, permanent=0)
        conn.execute(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql "
            "AS $$BEGIN PERFORM pg_sleep(0.01); RETURN OLD; END$$"
        )
        conn.execute("CREATE TRIGGER slow BEFORE DELETE ON attributes FOR EACH ROW EXECUTE FUNCTION slow()")
        provision(connector(postgres, database), adaptive)
        conn.execute(adaptive.command)
        assert batch_rows(conn) == [(50, 50), (10, 10), (10, 10), (10, 5)]
        durations = conn.execute('SELECT min(duration_ms) FROM expiry."purge-attributes_batches"').fetchone()[0]
        assert durations >= 50  # each batch logs how long its statement took


@pytest.mark.parametrize("batch_size", [4, 20])
@pytest.mark.parametrize("column_type", ["numeric", "timestamptz"])
def test_the_index_walk_finds_every_expired_row_across_ties_and_fractions(postgres, database, column_type, batch_size):
    """7 expiries, about 13 rows each. Batches of 20 delete ranges of expiries, the next starting at
    the last key read; batches of 4 meet more ties than fit and take them by row id. Every expired
    row goes (fractional epoch seconds too), exactly the dry run's list; live and NULL rows stay."""
    with postgres.connect(database) as conn:
        conn.execute(f"CREATE TABLE attributes (id serial PRIMARY KEY, ttl_timestamp {column_type})")
        conn.execute("CREATE INDEX ON attributes (ttl_timestamp)")
        past = (
            "extract(epoch from now())::numeric - 100 - (g % 7) / 2.0"
            if column_type == "numeric"
            else "now() - interval '100 seconds' - (g % 7) * interval '500 ms'"
        )
        future = (
            "extract(epoch from now())::numeric + 3600.5" if column_type == "numeric" else "now() + interval '1 hour'"
        )
        conn.execute(f"INSERT INTO attributes (ttl_timestamp) SELECT {past} FROM generate_series(1, 90) g")
        conn.execute(f"INSERT INTO attributes (ttl_timestamp) SELECT {future} FROM generate_series(1, 20)")
        conn.execute("INSERT INTO attributes (ttl_timestamp) VALUES (NULL)")
        fixed = spec(batch_size=batch_size, target_batch_ms=0, allow_mass_deletion=True)
        listed = {k["id"] for k in plan(conn, fixed, sample_size=1000).sample_keys}
        before = {str(r[0]) for r in conn.execute("SELECT id FROM attributes")}
        provision(connector(postgres, database), fixed)
        conn.execute(fixed.command)
        after = {str(r[0]) for r in conn.execute("SELECT id FROM attributes")}
        assert before - after == listed and len(listed) == 90 and len(after) == 21


def row_images(conn, where: str) -> list[dict]:
    rows = conn.execute(f"SELECT to_jsonb(a) FROM attributes a WHERE {where} ORDER BY id").fetchall()
    return [row[0] for row in rows]


def archived(conn, job: str = "purge-attributes") -> list[dict]:
    rows = conn.execute(f"SELECT row_data FROM expiry.\"{job}_archive\" ORDER BY (row_data->>'id')::int").fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("expiries", ["distinct", "all equal"])
def test_the_archive_holds_exactly_the_deleted_rows_and_keeps_a_renewed_one_out(postgres, database, expiries):
    """Row by row: each deleted row is in <job>_archive as it was, in the same transaction as its
    delete; the row renewed while the purge waits for it is neither deleted nor archived. Distinct
    expiries: batches by range; all equal: batches of ties by row id."""
    keeping = spec(batch_size=7, target_batch_ms=0, archive=True)
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=30, live=40, permanent=2)
        if expiries == "all equal":
            conn.execute("UPDATE attributes SET ttl_timestamp = 1000 WHERE ttl_timestamp < extract(epoch from now())")
        conn.execute('ALTER TABLE attributes ADD COLUMN data jsonb DEFAULT \'{"k": [1, "two"]}\'')
        expired_rows = row_images(conn, "ttl_timestamp < extract(epoch from now())")
        listed = {k["id"] for k in plan(conn, keeping, sample_size=100).sample_keys}
        provision(connector(postgres, database), keeping)
    renewer = postgres.connect(database, autocommit=False)
    renewer.execute("UPDATE attributes SET ttl_timestamp = extract(epoch from now())::bigint + 3600 WHERE id = 9")

    def call() -> None:
        with named(postgres, database, "archiving") as conn:
            conn.execute(keeping.command)

    thread, outcome = in_background(call)
    blocked_on_a_lock(postgres, database, "archiving")
    renewer.commit()
    renewer.close()
    thread.join(60)
    assert outcome == [None]
    with postgres.connect(database) as conn:
        kept = archived(conn)
        assert kept == [row for row in expired_rows if row["id"] != 9]
        assert {str(row["id"]) for row in kept} == listed - {"9"}  # the dry run's list, less the renewed row
        assert count(conn, "id = 9") == 1 and count(conn) == 43
        run_ids = conn.execute('SELECT DISTINCT run_id FROM expiry."purge-attributes_archive"').fetchall()
        assert run_ids == conn.execute('SELECT run_id FROM expiry."purge-attributes_log"').fetchall()


def test_archive_retention_and_the_client_purge(postgres, database):
    keeping = spec(archive=True, archive_days=30, batch_size=2, target_batch_ms=0)
    with postgres.connect(database) as conn:
        make_table(conn, "timestamptz", expired=5, live=10, permanent=0)
        expired_rows = row_images(conn, "ttl_timestamp < now()")
        provision(connector(postgres, database), keeping)
        conn.execute(
            'INSERT INTO expiry."purge-attributes_archive" (archived_at, row_data) SELECT now() - '
            "make_interval(days => d), jsonb_build_object('old', d) FROM generate_series(29, 33) d"
        )
        result = purge(conn, keeping)
        assert result.rows_deleted == 5
        left = conn.execute(
            'SELECT row_data, run_id FROM expiry."purge-attributes_archive" ORDER BY archived_at'
        ).fetchall()
        assert [row for row, _ in left if "old" in row] == [{"old": 29}]  # older than 30 days: pruned in batches
        assert [row for row, run in left if "old" not in row and run is None] == expired_rows


def test_a_refused_or_dry_run_archives_nothing(postgres, database):
    keeping = spec(archive=True)
    with postgres.connect(database) as conn:
        make_table(conn, "bigint", expired=60, live=40, permanent=0)
        provision(connector(postgres, database), keeping)
        with pytest.raises(psycopg.errors.RaiseException, match="mass-deletion breaker"):
            conn.execute(keeping.command)
        assert plan(conn, keeping).refused and purge(conn, keeping).rows_deleted == 0
        assert archived(conn) == [] and count(conn) == 100


def partitioned(conn, default: bool = False) -> None:
    """events, partitioned by day on expires_at from the start of this hour: four partitions wholly
    before now (3 rows each but the first, empty), one around now (2 expired rows, 2 live), one
    after (5 live rows)."""
    base = conn.execute("SELECT date_trunc('hour', now())").fetchone()[0]
    conn.execute(
        "CREATE TABLE events (id bigint NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (id, expires_at)) "
        "PARTITION BY RANGE (expires_at)"
    )
    conn.execute("CREATE INDEX ON events (expires_at)")
    days = [(-5, -4), (-4, -3), (-3, -2), (-2, -1), (-1, 1), (1, 2)]
    for n, (low, high) in enumerate(days):
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} PARTITION OF events FOR VALUES FROM ({} + interval '{} days') "
                "TO ({} + interval '{} days')"
            ).format(
                sql.Identifier(f"events_{n}"),
                sql.Literal(base),
                sql.SQL(str(low)),
                sql.Literal(base),
                sql.SQL(str(high)),
            )
        )
    if default:
        conn.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    conn.execute(  # 3 rows in each of events_1..events_3
        "INSERT INTO events SELECT g, %s::timestamptz + (g / 3 - 4) * interval '1 day' + interval '1 hour' "
        "FROM generate_series(0, 8) g",
        (base,),
    )
    conn.execute("INSERT INTO events VALUES (100, now() - interval '1 minute'), (101, now() - interval '2 minutes')")
    conn.execute("INSERT INTO events VALUES (102, now() + interval '1 minute'), (103, now() + interval '2 minutes')")
    conn.execute(
        "INSERT INTO events SELECT 200 + g, %s::timestamptz + interval '36 hours' FROM generate_series(1, 5) g", (base,)
    )


def dropping(**overrides) -> PurgeSpec:
    return PurgeSpec(
        **{
            "job_name": "drop-events",
            "table": "events",
            "expiry_column": "expires_at",
            "mode": "drop-partitions",
            "breaker_max_share": 0.6,
            "breaker_ignore_below": 0,
            **overrides,
        }
    )


def partitions(conn) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def test_the_procedure_drops_whole_partitions_before_the_cutoff_as_planned(postgres, database):
    with postgres.connect(database) as conn:
        partitioned(conn)
        dry = plan(conn, dropping())
        assert [(p["partition"], p["rows"]) for p in dry.partitions] == [
            ("events_0", 0),
            ("events_1", 3),
            ("events_2", 3),
            ("events_3", 3),
        ]
        assert dry.expired_rows == 9 and dry.examined_rows == 16 and dry.refused is None  # counted to 9 / 0.6 + 1
        provision(connector(postgres, database), dropping())
        conn.execute(dropping().command)
        assert partitions(conn) == ["events_4", "events_5"]  # the one around now keeps its expired rows
        assert count(conn, table="events") == 9 and count(conn, "id >= 100", table="events") == 9
        assert conn.execute("SELECT to_regclass('events_1') IS NULL").fetchone()[0]  # dropped, not just detached
        log = conn.execute('SELECT rows_deleted, batches, refused FROM expiry."drop-events_log"').fetchone()
        assert log == (9, 4, None)
        dropped = conn.execute(
            'SELECT dropped_partition, rows_deleted FROM expiry."drop-events_batches" ORDER BY batch'
        ).fetchall()
        assert dropped == [(p["partition"], p["rows"]) for p in dry.partitions]  # the dry run is the run
    unprovision(connector(postgres, database), dropping())


@pytest.mark.parametrize("default", [False, True])
def test_the_client_drops_partitions_concurrently_where_it_can(postgres, database, default):
    """CONCURRENTLY needs no DEFAULT partition; with one, a plain DETACH. Same partitions either way."""
    with postgres.connect(database) as conn:
        partitioned(conn, default=default)
        statements: list[str] = []
        original = conn.execute

        def recording(query, *args, **kwargs):
            text = query if isinstance(query, str) else query.as_string(conn)
            if "DETACH" in text:
                statements.append(text)
            return original(query, *args, **kwargs)

        conn.execute = recording  # type: ignore[method-assign]
        result = purge(conn, dropping())
        conn.execute = original  # type: ignore[method-assign]
        assert result.partitions_dropped == ["events_0", "events_1", "events_2", "events_3"]
        assert result.rows_deleted == 9 and result.batches == 4
        assert all(s.endswith("CONCURRENTLY") != default for s in statements) and len(statements) == 4
        assert partitions(conn) == ["events_4", "events_5"] + (["events_default"] if default else [])


def test_the_breaker_and_the_dry_run_apply_to_partitions(postgres, database):
    with postgres.connect(database) as conn:
        partitioned(conn)
        refused = purge(conn, dropping(breaker_max_share=0.4))
        assert refused.plan.refused and "9 of 18 rows examined" in refused.plan.refused
        assert refused.partitions_dropped == [] and len(partitions(conn)) == 6
        assert purge(conn, dropping(breaker_max_count=8)).plan.refused is not None and len(partitions(conn)) == 6
        provision(connector(postgres, database), dropping(breaker_max_share=0.4))
        with pytest.raises(psycopg.errors.RaiseException, match="mass-deletion breaker: 9 of 18"):
            conn.execute(dropping().command)
        assert len(partitions(conn)) == 6 and count(conn, table="events") == 18
    unprovision(connector(postgres, database), dropping())


@pytest.mark.parametrize("where", ["client", "procedure"])
def test_a_partition_holding_a_live_row_is_never_dropped(postgres, database, monkeypatch, where):
    """The bounds alone never list a partition with a live row (and DETACH CONCURRENTLY keeps the
    bound as a CHECK constraint, so nothing live gets in after). Whatever lists one by mistake (here
    a listing shifted two days late) meets the check of max(expiry): that partition stays attached
    with every row, the run fails and says which; the older ones were dropped."""
    real = cleanup.partitions_before
    monkeypatch.setattr(
        cleanup,
        "partitions_before",
        lambda spec, cutoff, kind, **rows: real(spec, sql.SQL("({} + interval '2 days')").format(cutoff), kind, **rows),
    )
    careless = dropping(allow_mass_deletion=True)
    with postgres.connect(database) as conn:
        partitioned(conn)
        if where == "client":
            with pytest.raises(
                CleanupError, match=r"partition events_4 holds 2 live rows .* nothing of it was dropped"
            ):
                purge(conn, careless)
        else:
            provision(connector(postgres, database), careless)
            with pytest.raises(psycopg.errors.RaiseException, match="partition events_4 holds 2 live rows"):
                conn.execute(careless.command)
        assert partitions(conn) == ["events_4", "events_5"] and count(conn, table="events") == 9


def test_drop_partitions_refuses_a_table_it_cannot_handle(postgres, database):
    with postgres.connect(database) as conn:
        make_table(conn, "timestamptz", expired=3, live=3, permanent=0)
        conn.execute("CREATE TABLE by_id (id int, ttl_timestamp timestamptz) PARTITION BY RANGE (id)")
    plain = spec(mode="drop-partitions")
    with pytest.raises(
        CleanupError,
        match=r"mode: drop-partitions needs public.attributes to be PARTITION BY RANGE "
        r"\(ttl_timestamp\); it is not partitioned",
    ):
        provision(connector(postgres, database), plain)
    with pytest.raises(CleanupError, match="mode: .* it is partitioned by RANGE on 1 column\\(s\\) starting with 'id'"):
        provision(connector(postgres, database), spec(table="by_id", mode="drop-partitions"))
    with postgres.connect(database) as conn:
        assert conn.execute("SELECT to_regnamespace('expiry') IS NULL").fetchone()[0]  # nothing created
        with pytest.raises(CleanupError, match="mode: drop-partitions needs"):
            plan(conn, plain)


def test_bad_new_settings_name_the_field():
    with pytest.raises(CleanupError, match="mode: must be one of delete, drop-partitions, got 'truncate'"):
        spec(mode="truncate")
    with pytest.raises(CleanupError, match="extra_column: not with mode drop-partitions"):
        spec(mode="drop-partitions", extra_column="kind", extra_value="a")
    with pytest.raises(CleanupError, match="archive: only with mode delete"):
        spec(mode="drop-partitions", archive=True)
    with pytest.raises(CleanupError, match="archive: must be true or false"):
        spec(archive="yes")
    with pytest.raises(CleanupError, match="archive_days: must be an integer in 1..3650"):
        spec(archive_days=0)
    with pytest.raises(CleanupError, match="target_batch_ms: must be an integer in 0..60000"):
        spec(target_batch_ms=-1)
    with pytest.raises(CleanupError, match="max_batch_size: must be at least batch_size \\(5000\\), got 100"):
        spec(max_batch_size=100)


def test_the_job_settings_reach_the_purge():
    """A pg-purge job's purge section carries the new settings to PurgeSpec."""
    from expiry.runtime.handlers.postgres_work import purge_spec
    from expiry.runtime.jobs.config import parse_job

    job = parse_job(
        {
            "kind": "pg-purge",
            "job_name": "purge-attributes",
            "table_name": "attributes",
            "namespace": "Expiry",
            "postgres": {"host": "h", "database": "d", "secret_arn": "arn:aws:secretsmanager:us-east-1:1:secret:x"},
            "purge": {"expiry_column": "e", "archive": True, "archive_days": 9, "target_batch_ms": 50},
        }
    )
    made = purge_spec(job)
    assert (made.archive, made.archive_days, made.target_batch_ms) == (True, 9, 50)
    assert json.dumps(made.to_dict())  # the spec travels as JSON (VPC mode's payload)


def test_ties_on_a_table_partitioned_by_another_column_go_exactly_as_picked(postgres, database):
    """Row ids repeat across partitions: a batch of ties picked by row id must delete those rows, not
    another partition's rows at the same row ids (each batch deletes at most what it picked)."""
    with postgres.connect(database) as conn:
        conn.execute("CREATE TABLE attributes (id int, ttl_timestamp bigint) PARTITION BY HASH (id)")
        for remainder in range(3):
            conn.execute(
                f"CREATE TABLE attributes_{remainder} PARTITION OF attributes "
                f"FOR VALUES WITH (MODULUS 3, REMAINDER {remainder})"
            )
        conn.execute("CREATE INDEX ON attributes (ttl_timestamp)")
        conn.execute(
            "INSERT INTO attributes SELECT g, extract(epoch from now())::bigint - 100 FROM generate_series(1, 30) g"
        )
        conn.execute(
            "INSERT INTO attributes SELECT g, extract(epoch from now())::bigint + 3600 FROM generate_series(31, 40) g"
        )
        fixed = spec(batch_size=4, target_batch_ms=0, allow_mass_deletion=True)
        provision(connector(postgres, database), fixed)
        conn.execute(fixed.command)
        batches = batch_rows(conn)
        assert batches and all(deleted <= picked for picked, deleted in batches), batches
        assert sum(deleted for _, deleted in batches) == 30
        assert count(conn) == 10
