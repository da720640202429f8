"""Exit 0 when AWS credentials can be found, 1 when there are surely none: the places botocore looks,
checked with the standard library alone, so that `make up` can say so before installing anything.
It errs towards "present" (a profile named in a config file counts, whatever it holds); the deploy
venv's boto3 check after the install is the exact one."""

import configparser
import os
import sys
import urllib.request
from pathlib import Path


def present(env: dict[str, str]) -> bool:
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if any(
        env.get(name)
        for name in (
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        )
    ):
        return True
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path(env.get("HOME", "~")).expanduser()
    files = {
        Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"): profile,
        Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config"): (
            profile if profile == "default" else f"profile {profile}"
        ),
    }
    for path, section in files.items():
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            return True  # unreadable as INI: let boto3 judge it
        if parser.has_section(section):
            return True
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return False
    token = urllib.request.Request(  # an instance role (EC2): IMDSv2 answers on the link-local address
        "http://169.254.169.254/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    try:
        with urllib.request.urlopen(token, timeout=1):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(0 if present(dict(os.environ)) else 1)
