"""`make up` without a Pulumi CLI or AWS account: its guards and the commands it would run.

A fake `pulumi` on PATH records its calls; the real CLI is not on these machines."""

import os
import subprocess
from pathlib import Path

import pytest
from stack_config import ROOT


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{tmp_path / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    (tmp_path / "bin").mkdir()
    return env


def make_up(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    # -o: take the venv as set up (the test run itself proves it is).
    return subprocess.run(
        ["make", "-s", "-o", "venv/.installed", "up", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fake_pulumi(env: dict[str, str], tmp_path: Path) -> Path:
    log = tmp_path / "pulumi.log"
    script = tmp_path / "bin" / "pulumi"
    script.write_text(f'#!/bin/sh\necho "$PULUMI_BACKEND_URL $*" >> {log}\n')
    script.chmod(0o755)
    return log


def test_without_the_pulumi_cli_it_says_so(clean_env):
    result = make_up(clean_env)
    assert result.returncode != 0
    assert "make up needs the Pulumi CLI on PATH" in result.stdout + result.stderr


def test_without_aws_credentials_it_says_so(clean_env, tmp_path):
    log = fake_pulumi(clean_env, tmp_path)
    result = make_up(clean_env)
    assert result.returncode != 0
    assert "make up needs AWS credentials" in result.stdout + result.stderr
    assert not log.exists()  # nothing reached Pulumi


def test_with_both_it_runs_the_dev_stack_on_a_local_file_backend(clean_env, tmp_path):
    log = fake_pulumi(clean_env, tmp_path)
    env = {**clean_env, "AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": "fake"}
    result = make_up(env)
    assert result.returncode == 0, result.stdout + result.stderr
    backend = f"file://{ROOT / '.pulumi-state'}"
    assert log.read_text().splitlines() == [
        f"{backend} stack select --create dev",
        f"{backend} up --stack dev",
    ]
    assert os.path.isdir(ROOT / ".pulumi-state")
