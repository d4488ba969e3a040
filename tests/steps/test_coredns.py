"""The API DNS name inside the cluster: the runbook's Corefile edit (k8sfiles) against kubeadm's
default Corefile, read by the strict CoreDNS stand-in (lab/standins/rbk8s/coredns.py), and the
CNI step's resource as a flow over the scripted cluster: once, then nothing."""

from __future__ import annotations

import pytest

from lab.standins.rbk8s import coredns
from runbook.core.engine import plan_target, run_step
from runbook.core.plan import Status
from runbook.render import k8sfiles
from runbook.steps.cni import CniStep
from runbook.steps.init import InitStep

from .test_k8s_steps import World, inv  # noqa: F401  (fixture)

NAME, VIP = "api.k8s.skgm.de", "10.143.0.50"
DEFAULT = coredns.kubeadm_default("k8s.skgm.de")


def test_without_the_entry_pods_get_nxdomain_for_the_posts_api_name() -> None:
    assert coredns.resolve(DEFAULT, NAME) is None
    assert coredns.resolve(DEFAULT, "example.org") == "forward"


def test_with_the_entry_the_name_is_the_vip_and_the_rest_falls_through() -> None:
    new = k8sfiles.corefile_with_api_host(DEFAULT, NAME, VIP)
    assert coredns.resolve(new, NAME) == VIP
    assert coredns.resolve(new, "other.k8s.skgm.de") is None  # still the kubernetes plugin's
    assert coredns.resolve(new, "example.org") == "forward"
    assert k8sfiles.corefile_with_api_host(new, NAME, VIP) == new  # idempotent
    moved = k8sfiles.corefile_with_api_host(new, NAME, "10.143.0.60")
    assert coredns.resolve(moved, NAME) == "10.143.0.60"
    assert moved.count("hosts {") == 1


def test_a_foreign_hosts_block_is_refused_not_merged() -> None:
    theirs = DEFAULT.replace("    ready\n", "    ready\n    hosts {\n       1.2.3.4 x.y\n    }\n")
    coredns.parse(theirs)  # valid for CoreDNS
    with pytest.raises(ValueError, match="already has a hosts block"):
        k8sfiles.corefile_with_api_host(theirs, NAME, VIP)


def test_a_corefile_without_kubernetes_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no \.:53 block with a kubernetes plugin"):
        k8sfiles.corefile_with_api_host(".:53 {\n    forward . 1.1.1.1\n}\n", NAME, VIP)


@pytest.mark.parametrize(
    ("corefile", "error"),
    [
        (DEFAULT.replace("    loop\n", "    loop\n    loop\n"), "only be used once"),
        (DEFAULT.replace("    loop\n", "    hostz\n"), "unknown directive 'hostz'"),
        (DEFAULT.replace("    loop\n", "    hosts {\n       api.x 10.0.0.1\n    }\n"),
         "unknown property 'api.x'"),
        (DEFAULT.replace("    loop\n", "    hosts {\n       10.0.0.1 bad_name\n    }\n"),
         "bad entry"),
        (DEFAULT.rstrip().removesuffix("}"), "not closed"),
    ],
)  # fmt: skip
def test_the_standin_refuses_what_coredns_refuses(corefile: str, error: str) -> None:
    with pytest.raises(coredns.CorefileError, match=error):
        coredns.parse(corefile)


def test_configmap_carries_the_corefile_as_a_block() -> None:
    import yaml

    text = k8sfiles.coredns_configmap(DEFAULT)
    assert "Corefile: |" in text
    assert yaml.safe_load(text)["data"]["Corefile"] == DEFAULT


def test_cni_step_adds_the_entry_once(inv) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    w = World(inv)
    run_step(InitStep(), w.ctx())
    first = run_step(CniStep(), w.ctx())
    assert [r.status for r in first.results] == [Status.CHANGED]
    assert "coredns:api-host" in [c.resource for c in first.results[0].changes]
    corefile = w.cluster.objects["configmap/coredns"]["data"]["Corefile"]
    assert coredns.resolve(corefile, NAME) == VIP
    plan = plan_target(CniStep(), w.ctx(), inv.first_control_plane.name)
    assert not plan.error and plan.changes == ()
