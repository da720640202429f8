"""The stack's URNs stay those of the deployed stacks: every URN recorded in tests/snapshots/ (from
__main__.py under the mocks, dev and prod as shipped) is still registered, or named by an alias of a
resource registered now, so `pulumi up` of an existing stack replaces nothing by a rename or a move.

`venv/bin/python tests/test_urns_stable.py` adds the URNs registered now to the snapshots, on purpose
(a change that adds resources); it keeps every URN already there, since a stack not yet updated still
holds it. A resource removed on purpose is deleted from the snapshots by hand, and said so in review."""

import json
import os
import runpy
import sys
import tempfile
from pathlib import Path
from typing import Any

import pulumi
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pulumi_harness import Harness, RecordingMocks, RecordingMonitor
from stack_config import ROOT, stack_config

SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
# The stacks as shipped; prod with the password its README asks the operator to set as a secret.
STACKS: dict[str, dict[str, Any]] = {"dev": {}, "prod": {"postgresPassword": "s3cret-set-by-the-operator"}}
STACK_TYPE = "pulumi:pulumi:Stack"


def _urn(stack: str, parent: str, type_: str, name: str) -> str:
    """A resource's URN as the mock monitor makes it: the parent's type, then the resource's type."""
    if parent:
        type_ = parent.split("::")[2].split("$")[-1] + "$" + type_
    return "::".join([f"urn:pulumi:{stack}", "expiry", type_, name])


class AliasMonitor(RecordingMonitor):
    """A recording monitor that also keeps the URNs each registration's aliases name."""

    def __init__(self, mocks: RecordingMocks, stack: str) -> None:
        super().__init__(mocks)
        self.stack = stack
        self.aliases: dict[str, list[str]] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)
        if request.type != STACK_TYPE:
            self.aliases[response.urn] = [self._alias(request, alias) for alias in request.aliases]
        return response

    def _alias(self, request: Any, alias: Any) -> str:
        if alias.urn:
            return str(alias.urn)
        spec = alias.spec
        parent = "" if spec.noParent else (spec.parentUrn or request.parent)
        return _urn(spec.stack or self.stack, parent, spec.type or request.type, spec.name or request.name)


def registered(stack: str) -> dict[str, list[str]]:
    """URN -> alias URNs of every resource __main__.py registers for ``stack`` as shipped."""
    monitor = AliasMonitor(RecordingMocks(), stack)
    pulumi.runtime.set_all_config(stack_config(stack, **STACKS[stack]), secret_keys=["expiry:postgresPassword"])
    pulumi.runtime.set_mocks(monitor.mocks, project="expiry", stack=stack, preview=False, monitor=monitor)
    Harness(monitor).run(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__"))
    return monitor.aliases


def snapshot(stack: str) -> list[str]:
    return list(json.loads((SNAPSHOTS / f"urns-{stack}.json").read_text()))


def leaf(urn: str) -> tuple[str, str]:
    """A URN's own type and name, whatever its parents."""
    _, _, types, name = urn.split("::", 3)
    return types.split("$")[-1], name


def unstable(old: list[str], now: dict[str, list[str]]) -> list[str]:
    """What `pulumi up` from ``old`` to ``now`` would delete, or replace by a move without an alias."""
    named = set(now) | {alias for aliases in now.values() for alias in aliases}
    problems = [f"{urn} is gone: neither registered nor an alias" for urn in old if urn not in named]
    by_leaf = {leaf(urn): urn for urn in old}
    for urn, aliases in now.items():
        before = by_leaf.get(leaf(urn))
        if urn not in old and before is not None and before not in aliases:
            problems.append(f"{urn} replaces {before}: same type and name under another parent, no alias")
    return problems


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_every_deployed_urn_is_still_registered_or_aliased(stack, monkeypatch, tmp_path):
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path))
    assert unstable(snapshot(stack), registered(stack)) == []


def test_the_stream_cascade_s_alarms_need_their_alias(monkeypatch, tmp_path):
    # They moved from under TtlStreamCascade to CleanupAlarms: without the alias, `pulumi up` would
    # delete the four deployed alarms and create four new ones.
    import stack.systems as systems

    keep = systems.watched_stream
    monkeypatch.setattr(
        systems, "watched_stream", lambda cascade: {k: v for k, v in keep(cascade).items() if k != "alarm_alias_parent"}
    )
    monkeypatch.setenv("EXPIRY_BUILD_DIR", str(tmp_path))
    problems = unstable(snapshot("dev"), registered("dev"))
    assert len(problems) == 8 and all("upload-cascade-" in problem for problem in problems)


def test_a_move_without_its_alias_is_caught():
    old = ["urn:pulumi:dev::expiry::expiry:index:A$aws:sns/topic:Topic::t"]
    moved = "urn:pulumi:dev::expiry::expiry:index:B$aws:sns/topic:Topic::t"
    assert unstable(old, {moved: list(old)}) == []
    problems = unstable(old, {moved: []})
    assert len(problems) == 2 and "is gone" in problems[0] and "replaces" in problems[1]


NAMES = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True), min_size=1, max_size=6, unique=True)


@given(names=NAMES, moved=st.data())
def test_moves_pass_with_their_aliases_and_fail_without(names, moved):
    def urn(parent: str, name: str) -> str:
        return f"urn:pulumi:dev::expiry::expiry:index:{parent}$aws:sns/topic:Topic::{name}"

    old = [urn("A", name) for name in names]
    chosen = moved.draw(st.sets(st.sampled_from(names), min_size=1))
    now = {urn("B" if n in chosen else "A", n): [urn("A", n)] if n in chosen else [] for n in names}
    assert unstable(old, now) == []
    bare = {key: [] for key in now}
    assert len(unstable(old, bare)) == 2 * len(chosen)  # each moved one: gone, and replaced


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # __main__.py imports stack/
    with tempfile.TemporaryDirectory() as build:
        os.environ["EXPIRY_BUILD_DIR"] = build
        for name in STACKS:
            urns = sorted(set(snapshot(name)) | set(registered(name)))
            (SNAPSHOTS / f"urns-{name}.json").write_text(json.dumps(urns, indent=1) + "\n")
            print(f"{name}: {len(urns)} URNs")
