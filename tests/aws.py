"""AWS for the tests: moto in-process, or moto_server over HTTP on a free loopback port."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import requests
from moto import mock_aws
from moto.server import ThreadedMotoServer
from tests_support import free_port

from expiry.runtime.aws_clients import client_config

REGION = "us-east-1"


@dataclass
class Aws:
    """Clients of one moto backend; ``endpoint`` is None in-process."""

    mode: str
    endpoint: str | None
    dynamodb: Any
    s3: Any

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = make_client(service, self.endpoint)
        return self._clients[service]

    def __post_init__(self) -> None:
        self._clients: dict[str, Any] = {"dynamodb": self.dynamodb, "s3": self.s3}


def make_client(service: str, endpoint: str | None, region: str = REGION) -> Any:
    return boto3.client(service, region_name=region, endpoint_url=endpoint, config=client_config())


class MotoServer:
    """One moto_server for the session, reset between tests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        requests.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def aws_backend(mode: str, server: MotoServer | None) -> Iterator[Aws]:
    if mode == "in-process":
        with mock_aws():
            yield Aws(mode, None, make_client("dynamodb", None), make_client("s3", None))
        return
    assert server is not None
    server.reset()
    yield Aws(mode, server.url, make_client("dynamodb", server.url), make_client("s3", server.url))
    server.reset()
