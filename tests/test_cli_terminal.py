"""The CLI a person trusts, run as a person runs it: on a pseudo-terminal (prompt, progress, Ctrl-C)
against moto_server, and against an endpoint that accepts connections and never answers."""

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from botocore.exceptions import BotoCoreError
from postgres import expiring_table
from tests_support import free_port
from uploads_world import TABLE, create_table, put_session, session_ids

from expiry.runtime import aws_clients
from expiry.runtime.cli import CLI_CALL_SECONDS
from expiry.runtime.handlers.work import default_clients, entry_point
from expiry.runtime.jobs.config import parse_job

NOW = int(time.time())
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
ENV = {
    **os.environ,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class SilentServer:
    """Accepts TCP connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


class SlowProxy:
    """Forwards to ``target`` port, holding each request chunk ``delay`` seconds (a slow network)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.sock = socket.create_server(("127.0.0.1", free_port()))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client = self.sock.accept()[0]
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pipe, args=(client, upstream, self.delay), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, 0.0), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def world(moto_server):
    from aws import aws_backend

    with aws_backend("moto_server", moto_server) as aws:
        create_table(aws.dynamodb)
        aws.dynamodb.update_time_to_live(
            TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
        )
        yield aws, moto_server


Reaction = Callable[[str, Callable[[str], None], subprocess.Popen[bytes]], None]


def on_terminal(args: list[str], react: Reaction) -> tuple[int, str, str]:
    """Run the CLI with stdin and stderr on a pseudo-terminal (stdout piped): ``react`` sees the
    terminal's text so far, and may type (``type``) or signal the process. Exit code, terminal, stdout."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "expiry", *args], stdin=slave, stderr=slave, stdout=subprocess.PIPE, env=ENV
    )
    os.close(slave)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else b""), daemon=True)
    reader.start()

    def type_(text: str) -> None:
        os.write(master, text.encode())

    seen = ""
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
            react(seen, type_, proc)
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=120)
    reader.join(60)
    os.close(master)
    return code, seen, b"".join(out).decode()


def sessions(aws, count: int) -> None:
    for i in range(count):
        put_session(aws.dynamodb, f"old-{i}", NOW - 3600 - i)
    put_session(aws.dynamodb, "live", NOW + 3600)


@pytest.mark.parametrize(("reply", "code", "left"), [("y", 4, 31), ("yes", 0, 1), (TABLE, 0, 1)])
def test_sweep_on_a_terminal_shows_target_count_and_keys_then_asks(world, reply, code, left):
    aws, server = world
    sessions(aws, 30)
    answered: list[str] = []

    def react(text: str, type_: Callable[[str], None], proc: subprocess.Popen[bytes]) -> None:
        if "to delete: " in text and not answered:
            answered.append(reply)
            type_(f"{reply}\n")

    args = ["sweep", "--table", TABLE, "--allow-mass-deletion", "--json", "--endpoint-url", server.url]
    exit_code, terminal, out = on_terminal(args, react)
    assert exit_code == code, terminal
    assert f"target: region us-east-1  account 123456789012  endpoint {server.url}  table {TABLE}" in terminal
    assert "planned: 30 items to delete" in terminal
    shown = re.findall(r'^  \{"uploadSessionId": "(old-\d+)"\}\r?$', terminal, re.MULTILINE)
    assert len(shown) == 20 and len(set(shown)) == 20  # the plan's sample (plan_sample_size) of the keys
    assert "items to delete (30):" in terminal and "  and 10 more" in terminal
    assert f"Delete as planned from {TABLE}? Type yes or {TABLE} to delete: " in terminal
    assert len(session_ids(aws.dynamodb)) == left
    if code == 0:
        assert "deleted 30/30 (100.0%)" in terminal  # progress on a terminal: done of total
        assert json.loads(out)["counts"]["items_deleted"] == 30
    else:
        assert "expiry: error: not confirmed; nothing was deleted" in terminal
        assert json.loads(out) == {"error": "not confirmed; nothing was deleted", "exit_code": 4}


def test_ctrl_c_stops_cleanly_and_prints_what_was_done(world):
    aws, server = world
    sessions(aws, 300)
    proxy = SlowProxy(server.port, delay=0.02)  # about 50 deletions a second with one worker
    interrupted: list[int] = []

    def react(text: str, type_: Callable[[str], None], proc: subprocess.Popen[bytes]) -> None:
        progress = re.findall(r"deleted (\d+)/300 .*ETA", text)  # once the line has a rate and an ETA
        if progress and int(progress[-1]) > 0 and not interrupted:
            interrupted.append(int(progress[-1]))
            proc.send_signal(signal.SIGINT)

    args = ["sweep", "--table", TABLE, "--yes", "--allow-mass-deletion", "--workers", "1", "--json"]
    try:
        exit_code, terminal, out = on_terminal([*args, "--endpoint-url", proxy.url], react)
    finally:
        proxy.close()
    assert interrupted, terminal
    assert exit_code == 130, terminal
    assert "Traceback" not in terminal and "interrupted: finishing what is in flight" in terminal
    summary = json.loads(out)
    deleted = summary["counts"]["items_deleted"]
    assert summary["interrupted"] is True and summary["stopped_early"] is True
    assert interrupted[0] <= deleted < 300
    assert len(session_ids(aws.dynamodb)) == 301 - deleted  # the summary counts exactly what was done
    assert re.search(r"\d+/s", terminal) and "ETA" in terminal  # progress had a rate and an ETA


def test_status_of_a_table_with_ttl_off_reports_it(world):
    aws, server = world
    create_table(aws.dynamodb, name="no-ttl")
    result = subprocess.run(
        [sys.executable, "-m", "expiry", "status", "--table", "no-ttl", "--json", "--endpoint-url", server.url],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["ttl_status"], status["ttl_enabled"], status["ttl_attribute"]) == ("DISABLED", False, None)
    assert status["target"] == {
        "region": "us-east-1",
        "account": "123456789012",
        "endpoint": server.url,
        "table": "no-ttl",
    }
    assert status["table_size"] == "0 B" and "TTL is off" in status["diagnosis"]


def test_status_shows_readable_times_and_sizes(world):
    aws, server = world
    sessions(aws, 3)
    command = [sys.executable, "-m", "expiry", "status", "--table", TABLE, "--endpoint-url", server.url]
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, env=ENV, timeout=120, check=False)
    status = json.loads(as_json.stdout)
    assert ISO.match(status["oldest_expiry_utc"]) and status["oldest_expiry_utc"] < status["newest_expiry_utc"]
    assert status["oldest_expired_age"].startswith("1h ")  # 3600 s and a little more
    as_text = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert re.search(r"^oldest_expiry_utc +\d{4}-\d{2}-\d{2}T", as_text.stdout, re.MULTILINE), as_text.stdout


def test_a_silent_endpoint_fails_the_cli_in_seconds(silent):
    command = [sys.executable, "-m", "expiry", "status", "--table", "t", "--endpoint-url", silent.url]
    started = time.monotonic()
    result = subprocess.run([*command, "--call-timeout", "3"], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("expiry: error: AWS: Read timeout on endpoint URL")
    assert len(result.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60  # generous: it took 544 s before
    default = aws_clients.call_limits(CLI_CALL_SECONDS)
    assert default.worst_case_seconds() <= CLI_CALL_SECONDS and default.attempts == 3


class Context:
    """A Lambda context whose time runs out ``seconds`` after it is made."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.end - time.monotonic()) * 1000)


def test_a_silent_endpoint_fails_the_lambda_run_with_its_metric_within_budget(silent, monkeypatch, capsys):
    settings = {
        "kind": "sweep",
        "job_name": "upload-sweeper",
        "table_name": TABLE,
        "key_attributes": ["uploadSessionId"],
        "ttl_attribute": "ttl",
        "safety_margin_seconds": 5,
    }
    monkeypatch.setenv("EXPIRY_JOB", json.dumps(settings))
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent.url)
    aws_clients.client.cache_clear()
    handler = entry_point("sweep")
    context = Context(seconds=30)
    with pytest.raises(BotoCoreError):
        handler({}, context)
    assert context.get_remaining_time_in_millis() > 0  # failed before Lambda's timeout
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert metrics[-1]["SweepFailed"] == 1
    config = default_clients(parse_job(settings))("dynamodb").meta.config
    limits = aws_clients.call_limits(5)
    assert (config.connect_timeout, config.read_timeout) == (limits.connect_timeout, limits.read_timeout)
    assert config.retries["total_max_attempts"] == limits.attempts
    assert limits.worst_case_seconds() <= 5  # a call started before the deadline ends before the timeout
    aws_clients.client.cache_clear()


def pg_table(postgres, expired: int, delete_ms: int) -> tuple[str, list[str]]:
    """An expiring table (tests/postgres.py) and the CLI's target arguments for it."""
    database = expiring_table(postgres, expired, delete_ms)
    return database, ["--postgres", postgres.dsn(database), "--table", "attributes", "--expiry-column", "ttl_timestamp"]


def rows_left(postgres, database: str) -> int:
    with postgres.connect(database) as conn:
        return conn.execute("SELECT count(*) FROM attributes").fetchone()[0]


@pytest.mark.parametrize(("reply", "code", "left"), [("y", 4, 42), ("public.attributes", 0, 2)])
def test_postgres_sweep_on_a_terminal_shows_target_and_count_then_asks(postgres, reply, code, left):
    database, target = pg_table(postgres, expired=40, delete_ms=1)
    answered: list[str] = []

    def react(text: str, type_: Callable[[str], None], proc: subprocess.Popen[bytes]) -> None:
        if "to delete: " in text and not answered:
            answered.append(reply)
            type_(f"{reply}\n")

    exit_code, terminal, out = on_terminal(["sweep", *target, "--allow-mass-deletion", "--json"], react)
    assert exit_code == code, terminal
    assert f"database {database}" in terminal and "table public.attributes" in terminal
    assert "planned: 40 expired rows to delete" in terminal
    assert "Delete 40 rows from public.attributes? Type yes or public.attributes to delete: " in terminal
    assert rows_left(postgres, database) == left
    if code == 0:
        assert "rows deleted 40/40 (100.0%)" in terminal
        assert json.loads(out)["rows_deleted"] == 40
    else:
        assert json.loads(out) == {"error": "not confirmed; nothing was deleted", "exit_code": 4}


def test_postgres_ctrl_c_stops_after_the_batch_in_flight_and_counts_what_was_deleted(postgres):
    database, target = pg_table(postgres, expired=400, delete_ms=10)  # batches of 5 rows: 50 ms each
    interrupted: list[int] = []

    def react(text: str, type_: Callable[[str], None], proc: subprocess.Popen[bytes]) -> None:
        progress = re.findall(r"rows deleted (\d+)/400", text)
        if progress and int(progress[-1]) > 0 and not interrupted:
            interrupted.append(int(progress[-1]))
            proc.send_signal(signal.SIGINT)

    args = ["sweep", *target, "--yes", "--allow-mass-deletion", "--batch-size", "5", "--json"]
    exit_code, terminal, out = on_terminal(args, react)

    assert interrupted, terminal
    assert exit_code == 130, terminal
    assert "Traceback" not in terminal and "interrupted: finishing what is in flight" in terminal
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert interrupted[0] <= summary["rows_deleted"] < 400
    assert rows_left(postgres, database) == 402 - summary["rows_deleted"]  # counts exactly what was done


@pytest.mark.parametrize("store", ["postgres", "dynamodb"])
def test_a_second_ctrl_c_quits_now_without_claiming_nothing_was_deleted(request, store):
    if store == "postgres":
        postgres = request.getfixturevalue("postgres")
        database, target = pg_table(postgres, expired=400, delete_ms=200)  # batches of 5 rows: 1 s each
        args, pattern = [*target, "--batch-size", "5"], r"rows deleted (\d+)/400"

        def left() -> int:  # expired rows left; the row without expiry and the live one must stay
            with postgres.connect(database) as conn:
                kept = conn.execute(
                    "SELECT count(*) FROM attributes "
                    "WHERE ttl_timestamp IS NULL OR ttl_timestamp > extract(epoch from now())"
                ).fetchone()[0]
            assert kept == 2
            return rows_left(postgres, database) - kept
    else:
        aws, server = request.getfixturevalue("world")
        sessions(aws, 300)
        proxy = SlowProxy(server.port, delay=1.0)  # the call in flight outlasts both Ctrl-Cs
        request.addfinalizer(proxy.close)
        args, pattern = ["--table", TABLE, "--workers", "1", "--endpoint-url", proxy.url], r"deleted (\d+)/300"

        def left() -> int:  # expired sessions left; the live one must stay
            ids = session_ids(aws.dynamodb)
            assert "live" in ids
            return len(ids) - 1

    signalled: list[int] = []

    def react(text: str, type_: Callable[[str], None], proc: subprocess.Popen[bytes]) -> None:
        progress = re.findall(pattern, text)
        if progress and int(progress[-1]) > 0 and not signalled:
            signalled.append(int(progress[-1]))
            proc.send_signal(signal.SIGINT)
        elif signalled and len(signalled) == 1 and "interrupted: finishing what is in flight" in text:
            signalled.append(-1)  # the second Ctrl-C once the first was taken: signals do not merge
            proc.send_signal(signal.SIGINT)

    total = 400 if store == "postgres" else 300
    exit_code, terminal, out = on_terminal(["sweep", *args, "--yes", "--allow-mass-deletion", "--json"], react)

    assert signalled, terminal
    assert exit_code == 130, terminal
    assert "Traceback" not in terminal and "nothing was deleted" not in terminal
    assert json.loads(out)["error"].startswith("interrupted while deleting, before the run's summary")
    assert left() <= total - signalled[0]  # what the progress line showed was deleted stays deleted
