"""`make up` and `make preview` without a Pulumi CLI or AWS account: their guards, which come before
anything is installed, what they install, and the commands they would run.

A fake `pulumi` on PATH records its calls; the real CLI is not on these machines."""

import os
import subprocess
import sys
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


def make_up(env: dict[str, str], *extra: str, goal: str = "up") -> subprocess.CompletedProcess[str]:
    # -o: take the venv as set up (the test run itself proves it is).
    return subprocess.run(
        ["make", "-s", "-o", "venv/.deploy-installed", goal, *extra],
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


def test_preview_runs_pulumi_preview_of_the_stack(clean_env, tmp_path):
    log = fake_pulumi(clean_env, tmp_path)
    env = {**clean_env, "AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": "fake"}
    result = make_up(env, "STACK=prod", goal="preview")
    assert result.returncode == 0, result.stdout + result.stderr
    backend = f"file://{ROOT / '.pulumi-state'}"
    assert log.read_text().splitlines() == [
        f"{backend} stack select --create prod",
        f"{backend} preview --stack prod",
    ]


def fresh_clone_make(env: dict[str, str], venv: Path, goal: str) -> subprocess.CompletedProcess[str]:
    """make GOAL as on a fresh clone: no venv yet (VENV points at one that does not exist)."""
    return subprocess.run(
        ["make", "-s", goal, f"VENV={venv}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("goal", ["up", "preview"])
def test_without_the_pulumi_cli_a_fresh_clone_installs_nothing(clean_env, tmp_path, goal):
    venv = tmp_path / "venv"
    result = fresh_clone_make(clean_env, venv, goal)
    assert result.returncode != 0
    assert (
        result.stdout.strip()
        == f"make {goal} needs the Pulumi CLI on PATH: https://www.pulumi.com/docs/iac/download-install/"
    )
    assert not venv.exists()


@pytest.mark.parametrize("goal", ["up", "preview"])
def test_without_aws_credentials_a_fresh_clone_installs_nothing(clean_env, tmp_path, goal):
    log = fake_pulumi(clean_env, tmp_path)
    venv = tmp_path / "venv"
    result = fresh_clone_make(clean_env, venv, goal)
    assert result.returncode != 0
    assert result.stdout.strip().startswith(f"make {goal} needs AWS credentials")
    assert not venv.exists() and not log.exists()


@pytest.mark.parametrize("goal", ["up", "preview"])
def test_deploying_installs_requirements_txt_only_and_after_the_checks(clean_env, tmp_path, goal):
    # make -n prints the commands a fresh clone would run, in order, running none.
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-n", goal, f"VENV={venv}"], cwd=ROOT, env=clean_env, capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    first = {
        what: next(i for i, line in enumerate(lines) if what in line)
        for what in ("command -v pulumi", "aws-credentials-present.py", f"-m venv {venv}", "-r requirements.txt")
    }
    assert list(first) == sorted(first, key=first.get), lines
    assert "requirements-dev.txt" not in result.stdout
    assert f"pulumi {goal} --stack dev" in lines[-1]


def test_make_test_still_installs_the_test_tools(clean_env, tmp_path):
    result = subprocess.run(
        ["make", "-n", "test", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, env=clean_env, capture_output=True, text=True
    )
    assert "-r requirements-dev.txt" in result.stdout and "pytest" in result.stdout
    assert "command -v pulumi" not in result.stdout  # no deploy checks for the tests


CREDENTIALS = ROOT / "scripts" / "aws-credentials-present.py"


@pytest.mark.parametrize(
    ("files", "extra_env", "found"),
    [
        ({}, {}, False),
        ({}, {"AWS_ACCESS_KEY_ID": "AKIAFAKE", "AWS_SECRET_ACCESS_KEY": "x"}, True),
        ({}, {"AWS_ACCESS_KEY_ID": "AKIAFAKE"}, False),  # half a key pair is none
        ({"no-credentials": "[default]\naws_access_key_id = AKIAFAKE\n"}, {}, True),
        ({"no-credentials": "[ops]\naws_access_key_id = AKIAFAKE\n"}, {}, False),  # not the default profile
        ({"no-credentials": "[ops]\naws_access_key_id = AKIAFAKE\n"}, {"AWS_PROFILE": "ops"}, True),
        ({"no-config": "[profile sso]\nsso_session = corp\n"}, {"AWS_PROFILE": "sso"}, True),
        ({"no-config": "[profile sso]\nsso_session = corp\n"}, {"AWS_PROFILE": "other"}, False),
        ({}, {"AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/token"}, True),
    ],
)
def test_the_credentials_check_before_installing(clean_env, tmp_path, files, extra_env, found):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [sys.executable, str(CREDENTIALS)], env={**clean_env, **extra_env}, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == (0 if found else 1), result.stderr
