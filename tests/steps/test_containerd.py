"""containerd: which package, from where, and what it really reads (runbook/render/containerd.py and
`ContainerRuntime`): given these facts, expect this change or this refusal.

The two dumps in tests/data are the REAL output of Debian 12's containerd 1.6.20
(`containerd --config F config dump`, the binary from `apt-get download containerd`) for the
runbook's version 3 config (1.36) and its version 2 config with pause 3.10.1 (1.35).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from runbook.core.engine import StepFailed
from runbook.core.remote import Fact
from runbook.core.resources import AptRepo, Packages
from runbook.inventory import Inventory, load_inventory
from runbook.render import containerd as ctd
from runbook.render import k8sfiles
from runbook.steps.k8s_prepare import ContainerRuntime, kubernetes_resources
from tests.fakehost import LocalHost

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
DEB12 = "debian|12|bookworm|Debian GNU/Linux 12 (bookworm)"
DEB13 = "debian|13|trixie|Debian GNU/Linux 13 (trixie)"
NOBLE = "ubuntu|24.04|noble|Ubuntu 24.04.3 LTS"
JAMMY = "ubuntu|22.04|jammy|Ubuntu 22.04.5 LTS"
DEBIAN_CONTAINERD = "containerd 1.6.20~ds1-1+deb12u3 ii "
DOCKER_CONTAINERD = "containerd.io 2.1.4-1~debian.12~bookworm ii "


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    p = tmp_path / "hosts.yaml"
    p.write_text((ROOT / "hosts.yaml").read_text())
    return load_inventory(p)


def check(minor: int, *lines: str) -> tuple[str, str] | None:
    host = LocalHost("k8node01", Path("/nonexistent"))
    change = ContainerRuntime(minor).check(host, Fact("\n".join(lines), 0))
    return None if change is None else (change.action, change.summary)


def test_fresh_debian_12_gets_containerd_io_from_dockers_bookworm_suite() -> None:
    assert check(36, DEB12) == ("install", "containerd.io from Docker's repository (bookworm)")


def test_containerd_io_is_recognised_as_the_runtime_no_swap_back() -> None:
    """containerd.io Provides/Conflicts/Replaces containerd: dpkg-query knows only
    containerd.io. The old `Packages(("containerd",))` planned `apt-get install containerd`
    here, which removes containerd.io again."""
    assert check(36, DEB12, DOCKER_CONTAINERD) is None
    old = Packages(("containerd",))
    host = LocalHost("k8node01", Path("/nonexistent"))
    assert old.check(host, Fact("containerd.io ii ", 1)) is not None  # the old flip-flop


def test_debians_containerd_1_6_is_refused_with_the_reason_and_the_way_out() -> None:
    with pytest.raises(StepFailed) as err:
        check(36, DEB12, DEBIAN_CONTAINERD)
    msg = str(err.value)
    assert "containerd 1.6.20~ds1-1+deb12u3 is installed" in msg
    assert "Kubernetes 1.36 needs containerd 2.0.0 or newer" in msg
    assert "version = 3" in msg and "apt-get purge containerd" in msg
    assert "containerd.io from Docker's repository (bookworm)" in msg


def test_a_removed_but_not_purged_containerd_does_not_count() -> None:
    assert check(36, DEB12, "containerd 1.6.20~ds1-1+deb12u3 rc ")[0] == "install"  # type: ignore[index]


@pytest.mark.parametrize(
    ("os_line", "installed", "minor", "want"),
    [
        (DEB13, "containerd 1.7.24~ds1-6 ii ", 35, None),  # Debian 13's own suffices for 1.35
        (DEB13, "containerd 1.7.24~ds1-6 ii ", 33, None),
        (DEB13, "containerd 1.7.24~ds1-6 ii ", 36, "refused"),  # …not for 1.36
        (NOBLE, "containerd 1.7.28-0ubuntu1~24.04.1 ii ", 35, None),
        (NOBLE, "containerd 1.7.28-0ubuntu1~24.04.1 ii ", 36, "refused"),
        (NOBLE, "", 36, ("install", "containerd.io from Docker's repository (noble)")),
        (DEB13, "", 36, ("install", "containerd.io from Docker's repository (trixie)")),
        (DEB12, "containerd 1.6.20~ds1-1+deb12u3 ii ", 35, "refused"),  # 1.6 is EOL
        (DEB12, "containerd.io 1.7.27-1 ii ", 36,
         ("upgrade", "containerd.io 1.7.27-1 -> 2.0.0 or newer")),
        (DEB12, "containerd.io 1.7.27-1 ii ", 35, None),
    ],
)  # fmt: skip
def test_each_os_by_its_own_version_where_it_suffices(
    os_line: str, installed: str, minor: int, want: object
) -> None:
    if want == "refused":
        with pytest.raises(StepFailed, match="drain the node"):
            check(minor, os_line, installed)
    else:
        assert check(minor, os_line, installed) == want


def test_an_os_dockers_repository_does_not_serve_is_refused() -> None:
    with pytest.raises(StepFailed) as err:
        check(36, JAMMY)
    assert "Ubuntu 22.04.5 LTS is not supported" in str(err.value)
    assert "debian 12, debian 13, ubuntu 24.04" in str(err.value)


def test_converges_on_a_fake_host_then_changes_nothing(tmp_path: Path) -> None:
    host = LocalHost("k8node01", tmp_path / "state")
    (host.state / "available").mkdir(parents=True)
    (host.state / "available" / "containerd.io").write_text("2.1.4-1~debian.12~bookworm")
    osr = tmp_path / "os-release"
    osr.write_text('ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\nPRETTY_NAME="D 12"\n')

    class Here(ContainerRuntime):
        def probe(self) -> str:
            return super().probe().replace("/etc/os-release", shlex.quote(str(osr)))

    res = Here(36)
    first = res.check(host, host.probe(res.probe()))
    assert first is not None and first.action == "install"
    res.apply(host)
    assert res.check(host, host.probe(res.probe())) is None
    assert any("install" in c and "containerd.io" in c for c in host.calls())


def test_prerequisites_come_before_any_keyring_fetch(inv: Inventory) -> None:
    res = kubernetes_resources(inv, "k8node01")
    first_repo = next(i for i, r in enumerate(res) if isinstance(r, AptRepo))
    pre = res[0]
    assert isinstance(pre, Packages) and set(pre.names) == {"ca-certificates", "curl", "gpg"}
    assert first_repo == 1
    assert [r.key for r in res if isinstance(r, AptRepo)] == [
        "apt-repo:kubernetes",
        "apt-repo:docker",
    ]
    docker = res[2]
    assert isinstance(docker, AptRepo)
    assert docker.line == (
        "deb [signed-by=/etc/apt/keyrings/docker.gpg] "
        "https://download.docker.com/linux/{id} {codename} stable"
    )
    assert docker.key_url == "https://download.docker.com/linux/{id}/gpg"


def test_a_containerd_repo_mirror_from_the_inventory(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["kubernetes"]["containerd_repo"] = {
        "url": "file:/srv/docker/linux/debian/",
        "key_url": "file:///srv/docker/linux/debian/gpg",
    }
    p = tmp_path / "hosts.yaml"
    p.write_text(yaml.safe_dump(data))
    src = k8sfiles.docker_apt_source(load_inventory(p))
    assert src.line == (
        "deb [signed-by=/etc/apt/keyrings/docker.gpg] file:/srv/docker/linux/debian {codename} "
        "stable"
    )
    assert src.key_url == "file:///srv/docker/linux/debian/gpg"


# ----- what containerd really reads ---------------------------------------------------------
def test_debian_containerd_1_6_ignores_the_version_3_config() -> None:
    """The real 1.6.20 dump of the runbook's v3 config: nothing of it was read."""
    dump = (DATA / "containerd-1.6.20-dump-of-v3-config.toml").read_text()
    problems = ctd.config_problems(dump, "registry.k8s.io/pause:3.10.2")
    assert problems == [
        "SystemdCgroup = false (kubelet uses the systemd cgroup driver)",
        "sandbox image registry.k8s.io/pause:3.6 (kubeadm expects registry.k8s.io/pause:3.10.2)",
    ]


def test_containerd_1_6_reads_the_version_2_config() -> None:
    dump = (DATA / "containerd-1.6.20-dump-of-v2-config.toml").read_text()
    assert ctd.config_problems(dump, "registry.k8s.io/pause:3.10.1") == []


def test_the_v3_config_as_containerd_2_reads_it(inv: Inventory) -> None:
    """containerd 2's dump keeps the v3 keys where the runbook wrote them."""
    conf = k8sfiles.containerd_config(inv)
    assert ctd.config_problems(conf, k8sfiles.pause_image(36)) == []
    off = 'disabled_plugins = ["cri"]\n' + conf
    assert ctd.config_problems(off, k8sfiles.pause_image(36)) == [
        "the CRI plugin is disabled (disabled_plugins)"
    ]


def test_garbage_dump_is_a_problem_not_a_traceback() -> None:
    assert ctd.config_problems("not toml [", "x")[0].startswith("unreadable `config dump`")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1.6.20~ds1-1+deb12u3", (1, 6, 20)),
        ("2.1.4-1~debian.12~bookworm", (2, 1, 4)),
        ("containerd containerd.io v2.1.4 05044ec0a9a7", (2, 1, 4)),
        ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3", (1, 6, 20)),
        ("1:1.7.24~ds1-6", (1, 7, 24)),
    ],
)  # fmt: skip
def test_versions(text: str, want: tuple[int, int, int]) -> None:
    assert ctd.parse_version(text) == want
