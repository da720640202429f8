"""Pulumi mocks for unit tests of programs that use Expiry's components: each AWS resource resolves
the names, ids and ARNs AWS would give it, so the outputs a component passes to another (a table's
name, ARN and stream ARN; a bucket's name; a database's address) are real values in tests.

    import pulumi
    from expiry.testing import ExpiryMocks

    pulumi.runtime.set_mocks(ExpiryMocks(), preview=False)

For tests only: nothing in Expiry imports this module."""

import hashlib
from typing import Any

import pulumi

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
STREAM_LABEL = "2026-01-01T00:00:00.000"


def _suffix(name: str, length: int = 7) -> str:
    """The hex Pulumi appends to an auto-named resource, fixed per logical name."""
    return hashlib.sha256(name.encode()).hexdigest()[:length]


class ExpiryMocks(pulumi.runtime.Mocks):
    """Outputs = inputs, plus what AWS computes: a physical name (the given one, else Pulumi's
    `<name>-<7 hex>`), the id, the ARN in ``region`` and ``account_id``, a table's stream ARN, a
    queue's URL, a bucket's name, an RDS instance's address and endpoint, a layer's version ARN."""

    def __init__(self, account_id: str = ACCOUNT_ID, region: str = REGION) -> None:
        self.account_id = account_id
        self.region = region

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        """The resource's id (a read keeps the id it was given) and its outputs."""
        state = dict(args.inputs)
        if not args.typ.startswith("aws:"):  # components, dynamic resources, other providers
            return args.resource_id or f"{args.name}_id", state
        resource_id, state = self._aws(args, state, args.resource_id or f"{args.name}-{_suffix(args.name)}")
        return args.resource_id or resource_id, state

    def _aws(
        self, args: pulumi.runtime.MockResourceArgs, state: dict[str, Any], auto: str
    ) -> tuple[str, dict[str, Any]]:
        service = args.typ.split(":")[1].split("/")[0]
        prefix = f"arn:aws:{service}:{self.region}:{self.account_id}"
        match args.typ:
            case "aws:dynamodb/table:Table":
                name = state.setdefault("name", auto)
                state.setdefault("arn", f"{prefix}:table/{name}")
                if state.get("streamEnabled"):
                    state.setdefault("streamArn", f"{state['arn']}/stream/{STREAM_LABEL}")
                    state.setdefault("streamLabel", STREAM_LABEL)
                return name, state
            case "aws:lambda/function:Function":
                name = state.setdefault("name", auto)
                state.setdefault("arn", f"{prefix}:function:{name}")
                state.setdefault("qualifiedArn", f"{state['arn']}:$LATEST")
                state.setdefault(
                    "invokeArn",
                    f"arn:aws:apigateway:{self.region}:lambda:path/2015-03-31/functions/{state['arn']}/invocations",
                )
                return name, state
            case "aws:lambda/layerVersion:LayerVersion":
                layer = f"{prefix}:layer:{state.setdefault('layerName', auto)}"
                state |= {"layerArn": layer, "arn": f"{layer}:1", "version": "1"}
                return state["arn"], state
            case "aws:lambda/eventSourceMapping:EventSourceMapping":
                uuid = f"{_suffix(args.name, 8)}-0000-4000-8000-{_suffix(args.name + '#', 12)}"
                state |= {"uuid": uuid, "arn": f"{prefix}:event-source-mapping:{uuid}"}
                return uuid, state
            case "aws:lambda/invocation:Invocation":
                state.setdefault("result", "{}")
                return f"{args.name}-invocation", state
            case "aws:iam/role:Role":
                name = state.setdefault("name", auto)
                state.setdefault("arn", f"arn:aws:iam::{self.account_id}:role/{name}")
                return name, state
            case "aws:iam/rolePolicy:RolePolicy":
                name = state.setdefault("name", auto)
                return f"{state.get('role')}:{name}", state
            case "aws:cloudwatch/logGroup:LogGroup":
                name = state.setdefault("name", auto)
                state.setdefault("arn", f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{name}")
                return name, state
            case "aws:cloudwatch/metricAlarm:MetricAlarm":
                name = state.setdefault("name", auto)
                state.setdefault("arn", f"{prefix}:alarm:{name}")
                return name, state
            case "aws:cloudwatch/dashboard:Dashboard":
                name = state.setdefault("dashboardName", auto)
                state.setdefault("dashboardArn", f"arn:aws:cloudwatch::{self.account_id}:dashboard/{name}")
                return name, state
            case "aws:sqs/queue:Queue":
                name = state.setdefault("name", auto)
                state.setdefault("arn", f"{prefix}:{name}")
                state.setdefault("url", f"https://sqs.{self.region}.amazonaws.com/{self.account_id}/{name}")
                return state["url"], state
            case "aws:sns/topic:Topic":
                name = state.setdefault("name", auto)
                state.setdefault("arn", f"{prefix}:{name}")
                return state["arn"], state
            case "aws:scheduler/schedule:Schedule":
                name = state.setdefault("name", auto)
                group = state.setdefault("groupName", "default")
                state.setdefault("arn", f"{prefix}:schedule/{group}/{name}")
                return f"{group}/{name}", state
            case "aws:s3/bucket:Bucket" | "aws:s3/bucketV2:BucketV2":
                name = state.setdefault("bucket", auto.lower())
                state.setdefault("arn", f"arn:aws:s3:::{name}")
                state.setdefault("bucketDomainName", f"{name}.s3.amazonaws.com")
                return name, state
            case "aws:rds/instance:Instance":
                name = state.setdefault("identifier", auto.lower())
                state.setdefault("address", f"{name}.c0ffee123456.{self.region}.rds.amazonaws.com")
                state.setdefault("port", 5432)
                state.setdefault("endpoint", f"{state['address']}:{state['port']}")
                state.setdefault("arn", f"{prefix}:db:{name}")
                return name, state
            case "aws:secretsmanager/secret:Secret":
                name = state.setdefault("name", auto)
                state.setdefault("arn", f"{prefix}:secret:{name}-{_suffix(name, 6)}")
                return state["arn"], state
            case "aws:ec2/securityGroup:SecurityGroup":
                group_id = f"sg-{_suffix(args.name, 17)}"
                state.setdefault("name", auto)
                state.setdefault("arn", f"{prefix}:security-group/{group_id}")
                return group_id, state
        # Any other AWS resource: a name and an ARN of the usual shape.
        name = state.setdefault("name", auto)
        state.setdefault("arn", f"{prefix}:{args.typ.split(':')[-1].lower()}/{name}")
        return name, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        """The account and region the components look up; an empty result for any other call."""
        return self._call(args.token), []

    def _call(self, token: str) -> dict[str, Any]:
        match token:
            case "aws:index/getCallerIdentity:getCallerIdentity":
                arn = f"arn:aws:iam::{self.account_id}:user/test"
                return {"accountId": self.account_id, "arn": arn, "userId": "AIDATEST", "id": self.account_id}
            case "aws:index/getRegion:getRegion":
                return {"name": self.region, "region": self.region, "id": self.region}
            case "aws:index/getPartition:getPartition":
                return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        return {}
