"""moto_server with IAM as AWS enforces it on the calls Expiry's jobs make.

Run as a script: ``python iam_moto.py PORT DECISIONS_FILE``. moto 5.2.5 reads
INITIAL_NO_AUTH_ACTION_COUNT once, when moto.settings is imported, and ``POST /moto-api/reset-auth``
sets it (and zeroes moto's request count) while the server runs: with ``0``, every request must be
signed by a known key and is checked against the policies of its principal; ``inf`` turns that off.
A server of its own process, so that turning enforcement on touches no other moto of the tests.

What AWS does and moto 5.2.5 does not, added here:

- a DynamoDB request is authorized on its table's or index's ARN, a Secrets Manager request on its
  secret's (moto checks "*", which no statement naming a resource matches, so every least-privilege
  policy would be denied);
- a statement's Condition is evaluated on the request's context (StringEquals, StringLike and their
  IfExists forms); the only context key set is s3:prefix, and only for ListBucket (AWS's
  service authorization reference gives ListBucketMultipartUploads no s3:prefix); a key the request
  lacks fails the condition and the statement does not apply (moto ignores conditions, and would
  turn a failed one into a Deny);
- DeleteObjects is authorized as s3:DeleteObject on each key (moto: on the bucket);
- HeadObject of a missing key answers 403 unless the caller may s3:ListBucket the bucket with the
  key as s3:prefix, 404 only then (moto: 404 to anyone). Taking the key for s3:prefix is this
  emulation's reading: AWS documents the 403/404 rule, not how it evaluates a prefix condition.

Each decision is appended to DECISIONS_FILE as a JSON line (principal, action, resource, allowed,
implicit, context), so tests can tell which grants a run used."""

import json
import re
import sys
import threading
from functools import cache
from typing import Any
from urllib.parse import parse_qs, urlparse

import xmltodict
from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.dynamodb.responses import DynamoHandler
from moto.iam import access_control
from moto.iam.access_control import IAMPolicyStatement, IAMRequestBase, PermissionResult
from moto.s3.exceptions import BucketAccessDeniedError, S3AccessDeniedError
from moto.s3.responses import S3Response
from moto.secretsmanager.responses import SecretsManagerResponse

LOCAL = threading.local()
LOCK = threading.Lock()
DECISIONS: dict[str, str] = {}
# Request context keys taken from the query string, per action.
QUERY_CONTEXT = {"s3:listbucket": {"s3:prefix": "prefix"}}


@cache
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    text = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(text, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _matches(patterns: Any, value: str, ignore_case: bool = False) -> bool:
    values = patterns if isinstance(patterns, list) else [patterns]
    return any(_wildcard(p, ignore_case).fullmatch(value) for p in values)


OPERATORS = {
    "stringequals": lambda value, expected: value == expected,
    "stringlike": lambda value, expected: _matches(expected, value),
}


def conditions_hold(condition: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    """Whether every condition of a statement holds on ``context``; an unknown operator does not."""
    for operator, keys in condition.items():
        name = operator.lower()
        if_exists = name.endswith("ifexists")
        test = OPERATORS.get(name.removesuffix("ifexists"))
        if test is None:
            return False
        for key, expected in keys.items():
            value = context.get(key.lower())
            if value is None:
                if if_exists:
                    continue
                return False
            if not any(test(value, e) for e in (expected if isinstance(expected, list) else [expected])):
                return False
    return True


_statement_permits = IAMPolicyStatement.is_action_permitted


def is_action_permitted(
    self: IAMPolicyStatement,
    action: str,
    resource: str = "*",
    principal: str | None = None,
    incoming_condition_values: dict[str, str] | None = None,
) -> PermissionResult:
    """A statement of an identity policy as AWS reads it; trust policies keep moto's own rules."""
    if principal is not None:
        return _statement_permits(self, action, resource, principal, incoming_condition_values)
    statement = self._statement
    if "Action" in statement:
        concerned = _matches(statement["Action"], action, ignore_case=True)
    else:
        concerned = not _matches(statement.get("NotAction", []), action, ignore_case=True)
    if "Resource" in statement:
        concerned = concerned and _matches(statement["Resource"], resource)
    elif "NotResource" in statement:
        concerned = concerned and not _matches(statement["NotResource"], resource)
    if not concerned or not conditions_hold(statement.get("Condition", {}), getattr(LOCAL, "context", {})):
        return PermissionResult.NEUTRAL
    return PermissionResult.PERMITTED if statement["Effect"] == "Allow" else PermissionResult.DENIED


def request_context(action: str, path: str) -> dict[str, str]:
    query = parse_qs(urlparse(path).query, keep_blank_values=True)
    return {key: query[name][0] for key, name in QUERY_CONTEXT.get(action.lower(), {}).items() if name in query}


_check_action = IAMRequestBase.check_action_permitted


def check_action_permitted(self: IAMRequestBase, resource: str) -> None:
    """moto's check, with the request's context keys, each decision recorded."""
    forced = getattr(LOCAL, "forced", None)
    context = LOCAL.context = forced if forced is not None else request_context(self._action, self._path)
    allowed = False
    try:
        _check_action(self, resource)
        allowed = True
    finally:
        LOCAL.context = {}
        record(
            {
                "principal": self._access_key.arn,
                "action": self._action,
                "resource": resource,
                "allowed": allowed,
                "implicit": forced is not None,
                "context": context,
            }
        )


def record(decision: dict[str, Any]) -> None:
    with LOCK, open(DECISIONS["path"], "a", encoding="utf-8") as out:
        out.write(json.dumps(decision) + "\n")


def dynamodb_resources(handler: DynamoHandler) -> list[str]:
    """The ARNs a DynamoDB request acts on: its table (or index), or each table of a batch."""
    params = handler.body if isinstance(handler.body, dict) else {}
    base = f"arn:aws:dynamodb:{handler.region}:{handler.current_account}:table/"
    if "TableName" in params:
        index = f"/index/{params['IndexName']}" if params.get("IndexName") else ""
        return [f"{base}{params['TableName']}{index}"]
    if "RequestItems" in params:
        return [f"{base}{name}" for name in params["RequestItems"]]
    if "TransactItems" in params:
        return [f"{base}{next(iter(item.values()))['TableName']}" for item in params["TransactItems"]]
    return ["*"]


_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action


def authorize_dynamodb(self: DynamoHandler, resource: str = "*") -> None:
    for arn in dynamodb_resources(self):
        _authorize(self, arn)


def authorize_secret(self: SecretsManagerResponse, resource: str = "*") -> None:
    """A request naming a secret (by name or ARN) is authorized on the secret's ARN."""
    secret_id = json.loads(self.body or "{}").get("SecretId") if isinstance(self.body, str | bytes) else None
    secret = self.backend.secrets.get(secret_id) if secret_id else None
    _authorize(self, secret.arn if secret is not None else resource)


_authorize_s3 = S3Response._authenticate_and_authorize_s3_action


def authorize_s3(self: S3Response, bucket_name: str | None = None, key_name: str | None = None) -> None:
    """DeleteObjects needs s3:DeleteObject on every key it names."""
    if key_name is None and bucket_name and self.data.get("Action") == "DeleteObject" and self.is_delete_keys():
        objects = xmltodict.parse(self.body)["Delete"].get("Object", [])
        for obj in objects if isinstance(objects, list) else [objects]:
            _authorize_s3(self, bucket_name=bucket_name, key_name=obj["Key"])
        return
    _authorize_s3(self, bucket_name=bucket_name, key_name=key_name)


def enforced() -> bool:
    return ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT


_head_object = S3Response.head_object


def head_object(self: S3Response, bucket_name: str, query: Any, key_name: str, headers: Any) -> Any:
    """A missing key is 404 only to a caller that may list it; 403 to any other."""
    status, response_headers, body = _head_object(self, bucket_name, query, key_name, headers)
    if status != 404 or not enforced():
        return status, response_headers, body
    action = self.data.get("Action")
    self.data["Action"] = "ListBucket"
    LOCAL.forced = {"s3:prefix": key_name}
    try:
        _authorize_s3(self, bucket_name=bucket_name)
    except (BucketAccessDeniedError, S3AccessDeniedError):
        return 403, response_headers, ""
    finally:
        LOCAL.forced = None
        self.data["Action"] = action
    return status, response_headers, body


def install(decisions_path: str) -> None:
    """Patch moto as the module's docstring says."""
    DECISIONS["path"] = decisions_path
    IAMPolicyStatement.is_action_permitted = is_action_permitted  # type: ignore[method-assign]
    IAMRequestBase.check_action_permitted = check_action_permitted  # type: ignore[method-assign]
    DynamoHandler._authenticate_and_authorize_normal_action = authorize_dynamodb  # type: ignore[method-assign,assignment]
    SecretsManagerResponse._authenticate_and_authorize_normal_action = authorize_secret  # type: ignore[method-assign,assignment]
    S3Response._authenticate_and_authorize_s3_action = authorize_s3  # type: ignore[method-assign,assignment]
    S3Response.head_object = head_object  # type: ignore[method-assign]
    assert access_control.IAMPolicyStatement is IAMPolicyStatement


if __name__ == "__main__":
    from moto.server import main

    install(sys.argv[2])
    main(["-H", "127.0.0.1", "-p", sys.argv[1]])
