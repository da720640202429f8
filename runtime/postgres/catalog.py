"""What the database says of a cleanup's table and of pg_cron: the expiry column's type, partitioning,
an index on the expiry column, the database pg_cron runs in."""

import re
from typing import Any

import psycopg
from psycopg import sql

from expiry.runtime.postgres.spec import EXPRESSION_FIELD, CleanupError, PurgeSpec, check_expression_text
from expiry.runtime.postgres.statements import index_exists, table_oid

EPOCH_TYPES = {
    "bigint": "epoch",
    "integer": "epoch",
    "smallint": "epoch",
    "numeric": "epoch",
    "double precision": "epoch",
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
}
# What an expiry expression may return: the column types, and date (compared with now() as timestamptz).
EXPRESSION_TYPES = {**EPOCH_TYPES, "date": "timestamptz"}
# Functions that read the clock: stable, yet an expiry that moves with now() is no row's expiry.
CLOCK_FUNCTIONS = ("now", "transaction_timestamp", "statement_timestamp", "clock_timestamp", "timeofday")
# Nodes of a parsed expression that read more than the row: refused wherever they appear in it.
REFUSED_NODES = ("SUBLINK", "AGGREF", "WINDOWFUNC", "SQLVALUEFUNCTION", "NEXTVALUEEXPR", "PARAM", "GROUPINGFUNC")


def one_row(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The row of a query that always returns one (aggregates, settings, privilege checks)."""
    row = cursor.fetchone()
    if row is None:
        raise CleanupError("a query that returns one row returned none")
    return row


def column_kind(conn: psycopg.Connection, spec: PurgeSpec) -> str:
    """'epoch', 'timestamptz' or 'timestamp', read from the catalog."""
    return column_type(conn, spec)[0]


def column_type(conn: psycopg.Connection, spec: PurgeSpec) -> tuple[str, str]:
    """The expiry column's kind ('epoch', 'timestamptz' or 'timestamp') and SQL type, from the catalog;
    an expiry expression's, checked by the server (check_expiry_expression)."""
    if spec.expiry_expression is not None:
        return check_expiry_expression(conn, spec)
    row = conn.execute(
        """SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped""",
        (spec.table_schema, spec.table, spec.expiry_column),
    ).fetchone()
    if row is None:
        raise CleanupError(
            f"expiry_column: no column {spec.expiry_column!r} in table "
            f"{spec.table_schema}.{spec.table} of this database"
        )
    kind = EPOCH_TYPES.get(re.sub(r"\(.*\)", "", row[0]).strip())
    if kind is None:
        raise CleanupError(
            f"expiry_column: {spec.expiry_column!r} is {row[0]}; expected epoch seconds "
            f"(bigint, integer, numeric) or timestamptz or timestamp"
        )
    return kind, row[0]


def check_expiry_expression(conn: psycopg.Connection, spec: PurgeSpec) -> tuple[str, str]:
    """The one check an expiry expression passes before any statement uses it; its kind and SQL type.

    First its text (check_expression_text: one parenthesised expression, no statement end, comment,
    subquery or clock word). Then the server, in transactions always rolled back: parsed as
    ``SELECT (<expression>) FROM <table> LIMIT 0`` in a READ ONLY transaction, it must be one column of
    epoch seconds, timestamptz, timestamp or date; then, as a temporary view's column (rolled back: nothing
    is left), the server's own parse tree of it (the view's rule, pg_rewrite.ev_action) is read: no
    subquery, aggregate, window function, sequence, parameter or SQL clock value node (REFUSED_NODES), and
    no function called directly (:funcid) or by an operator (:opno, its oprcode) that is volatile, not a
    plain function, or reads the clock; pg_depend shows it uses at least one column of the table.
    Stable functions are allowed: timestamptz + interval is one (it reads the time zone). Built-in
    functions are not in pg_depend (pinned objects), hence the parse tree."""
    field, text = EXPRESSION_FIELD, check_expression_text(spec.expiry_expression)
    table = f"{spec.table_schema}.{spec.table}"
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SET LOCAL lock_timeout = '10s'")
            cursor = conn.execute(sql.SQL("SELECT {} FROM {} LIMIT 0").format(spec.expiry, spec.target))
            columns = [column.type_code for column in cursor.description or ()]
            if len(columns) != 1:
                raise CleanupError(f"{field}: must be one expression, got {len(columns)} columns from {text!r}")
            type_name = one_row(conn.execute("SELECT format_type(%s, NULL)", (columns[0],)))[0]
    except psycopg.Error as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CleanupError(f"{field}: {text!r} is not an expression over the columns of {table}: {reason}") from error
    kind = EXPRESSION_TYPES.get(type_name)
    if kind is None:
        raise CleanupError(
            f"{field}: {text!r} is {type_name}; expected timestamptz, timestamp, date or epoch seconds "
            "(bigint, integer, numeric, double precision)"
        )
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL lock_timeout = '10s'")
            conn.execute(
                sql.SQL("CREATE TEMPORARY VIEW expiry_expression_check AS SELECT {} AS expiry FROM {}").format(
                    spec.expiry, spec.target
                )
            )
            columns_used, nodes, refused = one_row(
                conn.execute(
                    sql.SQL(
                        "WITH tree AS (SELECT r.ev_action::text AS text FROM pg_rewrite r "
                        "WHERE r.ev_class = 'pg_temp.expiry_expression_check'::regclass), "
                        "calls AS (SELECT m[1]::oid AS fn FROM tree, regexp_matches(tree.text, {funcid}, 'g') m "
                        "UNION SELECT o.oprcode FROM tree, regexp_matches(tree.text, {opno}, 'g') m "
                        "JOIN pg_operator o ON o.oid = m[1]::oid) "
                        "SELECT (SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON d.objid = r.oid "
                        "WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class = "
                        "'pg_temp.expiry_expression_check'::regclass AND d.refclassid = 'pg_class'::regclass "
                        "AND d.refobjid = {oid} AND d.refobjsubid > 0), "
                        "(SELECT string_agg(DISTINCT lower(m[1]), ', ') FROM tree, regexp_matches(tree.text, {nodes}, "
                        "'g') m), "
                        "(SELECT string_agg(DISTINCT p.oid::regprocedure::text || CASE WHEN p.prokind <> 'f' "
                        "THEN ' (not a plain function)' WHEN p.provolatile = 'v' THEN ' (volatile)' "
                        "ELSE ' (reads the clock)' END, ', ') FROM calls JOIN pg_proc p ON p.oid = calls.fn "
                        "WHERE p.provolatile = 'v' OR p.prokind <> 'f' OR (p.proname = ANY ({clock}) "
                        "AND p.pronamespace = 'pg_catalog'::regnamespace))"
                    ).format(
                        oid=table_oid(spec),
                        funcid=sql.Literal(r":funcid (\d+)"),
                        opno=sql.Literal(r":opno (\d+)"),
                        nodes=sql.Literal(r"\{(" + "|".join(REFUSED_NODES) + r")[ }]"),
                        clock=sql.Literal(list(CLOCK_FUNCTIONS)),
                    )
                )
            )
    except psycopg.Error as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CleanupError(f"{field}: cannot check {text!r} on {table}: {reason}") from error
    if refused:
        raise CleanupError(
            f"{field}: {text!r} calls {refused}; the expiry of a row must depend on its columns alone "
            "(immutable or stable functions)"
        )
    if nodes:
        raise CleanupError(
            f"{field}: {text!r} uses {nodes} (a subquery, aggregate, window function, sequence, parameter "
            f"or clock value); it may use the columns of {table} and functions of them alone"
        )
    if not columns_used:
        raise CleanupError(f"{field}: {text!r} uses no column of {table}; a row's expiry must depend on its columns")
    return kind, type_name


def check_partitioned(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    """drop-partitions needs the table partitioned by RANGE on the expiry column alone."""
    row = conn.execute(
        sql.SQL(
            "SELECT p.partstrat, p.partnatts, a.attname FROM pg_partitioned_table p "
            "LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
            "WHERE p.partrelid = {}"
        ).format(table_oid(spec))
    ).fetchone()
    wanted = f"PARTITION BY RANGE ({spec.column})"
    if row is None:
        raise CleanupError(
            f"mode: drop-partitions needs {spec.table_schema}.{spec.table} to be {wanted}; it is not partitioned"
        )
    if (row[0], row[1], row[2]) != ("r", 1, spec.column):
        raise CleanupError(
            f"mode: drop-partitions needs {spec.table_schema}.{spec.table} to be {wanted}; it is partitioned "
            f"by {'RANGE' if row[0] == 'r' else {'l': 'LIST', 'h': 'HASH'}.get(row[0], row[0])} "
            f"on {row[1]} column(s) starting with {row[2]!r}"
        )


def pg_cron_database(conn: psycopg.Connection) -> str:
    """The database pg_cron runs in; a clear error when pg_cron is not loaded or the settings cannot be read."""
    try:
        libraries = one_row(conn.execute("SELECT current_setting('shared_preload_libraries')"))[0]
        if "pg_cron" not in [name.strip() for name in libraries.split(",")]:
            raise CleanupError(
                "pg_cron is not loaded: add pg_cron to shared_preload_libraries (and set cron.database_name), "
                f"then restart PostgreSQL; shared_preload_libraries is {libraries!r}"
            )
        return one_row(conn.execute("SELECT current_setting('cron.database_name')"))[0]
    except psycopg.errors.InsufficientPrivilege as error:
        role = sql.Identifier(conn.info.user).as_string(conn)
        raise CleanupError(
            f"missing grant: GRANT pg_read_all_settings TO {role}; (to read shared_preload_libraries and "
            "cron.database_name)"
        ) from error


def has_index(conn: psycopg.Connection, spec: PurgeSpec) -> bool:
    """Whether a valid btree index leads with the expiry column (what the ordered batches need; without
    one, and for an expiry expression, batches walk the table by TID range)."""
    return bool(one_row(conn.execute(sql.SQL("SELECT {}").format(index_exists(spec))))[0])


def check_extra_column(conn: psycopg.Connection, spec: PurgeSpec) -> None:
    if spec.extra_column is None:
        return
    found = one_row(
        conn.execute(
            sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = {} AND attname = %s AND attnum > 0 "
                "AND NOT attisdropped)"
            ).format(table_oid(spec)),
            (spec.extra_column,),
        )
    )[0]
    if not found:
        raise CleanupError(f"extra_column: no column {spec.extra_column!r} in table {spec.table_schema}.{spec.table}")
