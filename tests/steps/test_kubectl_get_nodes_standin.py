"""The kubectl stand-in's `get nodes` prints what the real kubectl prints (NAME STATUS ROLES AGE
VERSION, tabwriter padding, `--no-headers`, kubectl's AGE format), from the node objects the
apiserver stand-in serves; the runbook's own parser (-o json) reads the same objects."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import pytest

from lab.standins.rbk8s.apiserver import Store
from lab.standins.rbk8s.daemons import human_duration, node_table
from runbook.steps._k8s import parse_nodes


@pytest.mark.parametrize(
    ("seconds", "want"),
    [
        (-5, "<invalid>"), (0, "0s"), (45, "45s"), (119, "119s"), (120, "2m"), (150, "2m30s"),
        (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (3 * 3600 + 60, "3h1m"),
        (47 * 3600, "47h"), (50 * 3600, "2d2h"), (48 * 3600, "2d"), (10 * 86400, "10d"),
        (800 * 86400, "2y70d"),
    ],
)  # fmt: skip
def test_age_like_kubectl(seconds: int, want: str) -> None:
    assert human_duration(seconds) == want


CREATED = 1_790_000_000


@pytest.fixture
def nodes(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    store = Store(tmp_path / "state.json", self_name="k8scontrol01")
    store.data["members"] = {"k8scontrol01": "10.143.0.2"}
    store.data["objects"]["daemonset/kube-system/weave-net"] = {}
    store.heartbeat("k8scontrol01", "v1.36.0", "10.143.0.2")
    store.heartbeat("k8node01", "v1.36.0", "10.143.0.7")
    first = store.data["nodes"]["k8scontrol01"]["created"]
    store.heartbeat("k8scontrol01", "v1.36.0", "10.143.0.2")  # a later report keeps the age
    assert store.data["nodes"]["k8scontrol01"]["created"] == first
    for n in store.data["nodes"].values():
        n["created"] = CREATED
    return store.node_list()


def test_table_with_headers_roles_and_age(nodes: dict) -> None:  # type: ignore[type-arg]
    created = nodes["items"][1]["metadata"]["creationTimestamp"]
    assert calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) == CREATED
    out = node_table(nodes, headers=True, now=CREATED + 150)
    assert out == (
        "NAME           STATUS   ROLES           AGE     VERSION\n"
        "k8node01       Ready    <none>          2m30s   v1.36.0\n"
        "k8scontrol01   Ready    control-plane   2m30s   v1.36.0\n"
    )


def test_no_headers(nodes: dict) -> None:  # type: ignore[type-arg]
    out = node_table(nodes, headers=False, now=time.time())
    assert out.splitlines()[1].split()[:3] == ["k8scontrol01", "Ready", "control-plane"]
    assert "NAME" not in out


def test_the_runbooks_parser_reads_the_same_nodes(nodes: dict) -> None:  # type: ignore[type-arg]
    import json

    parsed = parse_nodes(json.dumps(nodes))
    assert {n: (i.ready, i.version) for n, i in parsed.items()} == {
        "k8scontrol01": (True, "v1.36.0"),
        "k8node01": (True, "v1.36.0"),
    }
