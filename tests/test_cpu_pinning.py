"""Handlers keep a function with at most one vCPU's time on one CPU (runtime/jobs/cpu.py); each case
runs in its own interpreter, so the test process keeps its CPUs."""

import json
import os
import subprocess
import sys

import pytest

PROBE = (
    "import json, os; from expiry.runtime.jobs.cpu import pin_to_one_cpu; "
    "before = sorted(os.sched_getaffinity(0)); cpu = pin_to_one_cpu(); "
    "print(json.dumps([before, cpu, sorted(os.sched_getaffinity(0))]))"
)


def probe(memory: str | None) -> tuple[list[int], int | None, list[int]]:
    env = {k: v for k, v in os.environ.items() if k != "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"}
    if memory is not None:
        env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = memory
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    before, cpu, after = json.loads(done.stdout)
    return before, cpu, after


@pytest.mark.parametrize("memory", ["128", "256", "1769"])
def test_up_to_one_vcpu_the_process_stays_on_one_cpu(memory):
    before, cpu, after = probe(memory)
    if len(before) >= 2:
        assert cpu == before[0] and after == [before[0]]
    else:  # a machine with one CPU: nothing to pin
        assert cpu is None and after == before


@pytest.mark.parametrize("memory", [None, "1770", "3008", "", "lots"])
def test_more_than_one_vcpu_or_no_lambda_leaves_the_cpus_as_they_are(memory):
    before, cpu, after = probe(memory)
    assert cpu is None and after == before


def test_the_sweep_handler_pins_at_cold_start():
    job = {"kind": "sweep", "job_name": "pinned", "table_name": "t", "key_attributes": ["id"], "ttl_attribute": "ttl"}
    code = (
        "import os, json; from expiry.runtime.handlers import sweep; print(json.dumps(sorted(os.sched_getaffinity(0))))"
    )
    env = {**os.environ, "EXPIRY_JOB": json.dumps(job), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    allowed = sorted(os.sched_getaffinity(0))
    assert json.loads(done.stdout) == (allowed[:1] if len(allowed) >= 2 else allowed)
