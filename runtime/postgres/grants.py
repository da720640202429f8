"""The grants a cleanup lacks, as the statements that give them: the provisioning role's and run_as's."""

import psycopg
from psycopg import sql

from expiry.runtime.postgres.catalog import has_index, one_row
from expiry.runtime.postgres.spec import CREATED_BY, MODE_DROP_PARTITIONS, PurgeSpec
from expiry.runtime.postgres.statements import table_oid

SCHEDULE_IN_DATABASE = "cron.schedule_in_database(text,text,text,text,text,boolean)"
ALTER_JOB = "cron.alter_job(bigint,text,text,text,text,boolean)"


def _schema_grant(conn: psycopg.Connection, schema: str, role: str) -> str | None:
    """What lets ``role`` create the cleanup's objects in ``schema`` (CREATE on it, or on the database)."""
    exists, allowed = one_row(
        conn.execute(
            "SELECT to_regnamespace(quote_ident(%(s)s)) IS NOT NULL, CASE WHEN to_regnamespace(quote_ident(%(s)s)) "
            "IS NULL THEN has_database_privilege(current_database(), 'CREATE') "
            "ELSE has_schema_privilege(%(s)s, 'CREATE') AND has_schema_privilege(%(s)s, 'USAGE') END",
            {"s": schema},
        )
    )
    if allowed:
        return None
    if exists:
        return f"GRANT USAGE, CREATE ON SCHEMA {sql.Identifier(schema).as_string(conn)} TO {role};"
    return f"GRANT CREATE ON DATABASE {sql.Identifier(conn.info.dbname).as_string(conn)} TO {role};"


def _cron_functions(conn: psycopg.Connection, cron: psycopg.Connection, spec: PurgeSpec, role: str) -> list[str]:
    """The pg_cron functions (revoked from PUBLIC) that scheduling the jobs as ``role`` calls: both in another
    database than pg_cron's; cron.alter_job to pause or resume them (``paused``, or a job of the role inactive)."""
    if cron is not conn:
        return [SCHEDULE_IN_DATABASE, ALTER_JOB]
    inactive = cron.execute(
        "SELECT 1 FROM cron.job WHERE jobname = ANY(%s) AND username = %s AND NOT active",
        ([spec.job_name, spec.history_job], role),
    ).fetchone()
    return [ALTER_JOB] if spec.paused or inactive else []


def missing_grants(conn: psycopg.Connection, cron: psycopg.Connection, spec: PurgeSpec) -> list[str]:
    """The grants lacking to provision and run ``spec``, as the statements that give them (run by a
    superuser or RDS's master user): the connected role's (none for a superuser) and, with ``run_as``,
    the grants of the role the jobs run as. ``cron`` is a connection to pg_cron's database (``conn``
    itself when the table lives there)."""
    role_name, superuser = one_row(
        conn.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
    )
    missing = _run_as_grants(conn, cron, spec, role_name) if spec.run_as else []
    if superuser:
        return missing
    role = sql.Identifier(role_name).as_string(conn)
    table = spec.target.as_string(conn)
    usage, select, delete, owner = one_row(
        conn.execute(
            sql.SQL(
                "SELECT has_schema_privilege({ts}, 'USAGE'), has_table_privilege({oid}, 'SELECT'), "
                "has_table_privilege({oid}, 'DELETE'), pg_has_role((SELECT relowner FROM pg_class WHERE oid = {oid}), "
                "'USAGE')"
            ).format(ts=sql.Literal(spec.table_schema), oid=table_oid(spec))
        )
    )
    if not usage:
        missing.append(f"GRANT USAGE ON SCHEMA {sql.Identifier(spec.table_schema).as_string(conn)} TO {role};")
    runs_here = spec.run_as is None  # else run_as deletes; this role reads (the status view) and schedules
    granted = [name for name, ok in (("SELECT", select), ("DELETE", delete or not runs_here)) if not ok]
    if granted:
        missing.append(f"GRANT {', '.join(granted)} ON {table} TO {role};")
    if spec.create_index and not owner and not has_index(conn, spec):
        missing.append(f"ALTER TABLE {table} OWNER TO {role}; (create_index: only the owner can create an index)")
    if spec.mode == MODE_DROP_PARTITIONS and not owner and runs_here:
        missing.append(f"ALTER TABLE {table} OWNER TO {role}; (drop-partitions: only the owner can detach and drop)")
    missing += filter(None, [_schema_grant(conn, spec.schema, role)])
    version = cron.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
    if version is None:
        missing.append(f"CREATE EXTENSION pg_cron; (as a superuser, in database {cron.info.dbname!r})")
        return missing
    if not one_row(cron.execute("SELECT has_schema_privilege('cron', 'USAGE')"))[0]:
        missing.append(f"GRANT USAGE ON SCHEMA cron TO {role};")
        return missing
    for function in _cron_functions(conn, cron, spec, role_name) if runs_here else ():
        if not one_row(cron.execute("SELECT has_function_privilege(%s, 'EXECUTE')", (function,)))[0]:
            missing.append(f"GRANT EXECUTE ON FUNCTION {function} TO {role};")
    if cron is not conn:
        if not one_row(cron.execute("SELECT has_database_privilege(%s, 'CONNECT')", (conn.info.dbname,)))[0]:
            missing.append(f"GRANT CONNECT ON DATABASE {sql.Identifier(conn.info.dbname).as_string(conn)} TO {role};")
        missing += filter(None, [_schema_grant(cron, spec.schema, role)])
    return missing


def _run_as_grants(conn: psycopg.Connection, cron: psycopg.Connection, spec: PurgeSpec, provisioner: str) -> list[str]:
    """What ``run_as`` lacks to run the jobs: LOGIN (pg_cron connects as it), CONNECT, SELECT and DELETE on
    the table (its ownership for drop-partitions), USAGE on a schema the cleanup did not create, pg_cron's
    grants; and the membership that lets ``provisioner`` SET ROLE to it (pg_cron 1.4 lets only a superuser
    schedule a job for another role, so provisioning schedules as run_as itself)."""
    assert spec.run_as is not None
    runner, role = sql.Identifier(spec.run_as).as_string(conn), sql.Identifier(provisioner).as_string(conn)
    table = spec.target.as_string(conn)
    found = conn.execute(
        sql.SQL(
            "SELECT r.rolcanlogin, pg_has_role({p}, r.oid, 'MEMBER'), has_schema_privilege(r.oid, {ts}, 'USAGE'), "
            "has_table_privilege(r.oid, {oid}, 'SELECT'), has_table_privilege(r.oid, {oid}, 'DELETE'), "
            "pg_has_role(r.oid, (SELECT relowner FROM pg_class WHERE oid = {oid}), 'USAGE'), "
            "CASE WHEN to_regnamespace(quote_ident({s})) IS NULL THEN true "
            "WHEN obj_description(to_regnamespace(quote_ident({s})), 'pg_namespace') = {ours} THEN true "
            "ELSE has_schema_privilege(r.oid, {s}, 'USAGE') END FROM pg_roles r WHERE r.rolname = {r}"
        ).format(
            p=sql.Literal(provisioner),
            r=sql.Literal(spec.run_as),
            ts=sql.Literal(spec.table_schema),
            s=sql.Literal(spec.schema),
            oid=table_oid(spec),
            ours=sql.Literal(CREATED_BY),
        )
    ).fetchone()
    if found is None:
        return [f"CREATE ROLE {runner} LOGIN; (run_as: no such role)"]
    login, member, usage, select, delete, owner, schema_usage = found
    missing = [] if login else [f"ALTER ROLE {runner} LOGIN; (pg_cron connects as the role a job runs as)"]
    if not member:
        missing.append(f"GRANT {runner} TO {role}; (run_as: provisioning schedules the jobs as {runner})")
    if not usage:
        missing.append(f"GRANT USAGE ON SCHEMA {sql.Identifier(spec.table_schema).as_string(conn)} TO {runner};")
    granted = [name for name, ok in (("SELECT", select), ("DELETE", delete)) if not ok]
    if granted:
        missing.append(f"GRANT {', '.join(granted)} ON {table} TO {runner};")
    if spec.mode == MODE_DROP_PARTITIONS and not owner:
        missing.append(f"ALTER TABLE {table} OWNER TO {runner}; (drop-partitions: only the owner can detach and drop)")
    if not schema_usage:
        missing.append(f"GRANT USAGE ON SCHEMA {sql.Identifier(spec.schema).as_string(conn)} TO {runner};")
    for database in dict.fromkeys((conn.info.dbname, cron.info.dbname)):
        if not one_row(cron.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')", (spec.run_as, database)))[0]:
            missing.append(f"GRANT CONNECT ON DATABASE {sql.Identifier(database).as_string(conn)} TO {runner};")
    if not cron.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'").fetchone():
        return missing  # provisioning creates it (a superuser) or asks for it
    if not one_row(cron.execute("SELECT has_schema_privilege(%s, 'cron', 'USAGE')", (spec.run_as,)))[0]:
        missing.append(f"GRANT USAGE ON SCHEMA cron TO {runner};")
    else:
        for function in _cron_functions(conn, cron, spec, spec.run_as):
            query = "SELECT has_function_privilege(%s, %s, 'EXECUTE')"
            if not one_row(cron.execute(query, (spec.run_as, function)))[0]:
                missing.append(f"GRANT EXECUTE ON FUNCTION {function} TO {runner};")
    return missing
