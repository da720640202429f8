"""The clients every handler and the CLI use: what their requests carry."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

from expiry import __version__
from expiry.runtime.aws_clients import USER_AGENT, client_config


def test_requests_name_expiry_in_their_user_agent():
    seen: list[str] = []

    class DynamoDB(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["User-Agent"])
            body = b'{"TableNames": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), DynamoDB)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{server.server_port}",
            region_name="us-east-1",
            config=client_config(),
        )
        assert dynamodb.list_tables()["TableNames"] == []
    finally:
        server.shutdown()
    [user_agent] = seen
    assert user_agent.startswith(f"expiry/{__version__} Python/") and user_agent.startswith(USER_AGENT)
