"""`cluster.upgrade` tests the new minor's package repository on the first control plane, in
isolation, before any host's sources change (also in --dry-run).

The commands run in a local shell whose apt-get/apt-cache/curl/gpg are the strict fakes of
tests/fakebin: a fake package server ($S/repos) serves some repositories and their keys; apt
reads only the sources file and lists directory the options name.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit

from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, RunState, StepContext
from runbook.core.remote import Fact, Host, Result
from runbook.inventory import load_inventory
from runbook.render.k8sfiles import KEYRING, AptSource
from runbook.steps._repocheck import (
    RepositoryUnreachable,
    RepositoryUnusable,
    check_repository,
)
from runbook.steps.upgrade import ControlPlaneUpgraded, UpgradeRun
from runbook.tasks import _common as common
from runbook.tasks import day2
from runbook.tools.k8sversions import Version
from tests.fakehost import LocalHost

ROOT = Path(__file__).resolve().parents[2]
PKGS_K8S = "https://pkgs.k8s.io/core:/stable:/v1.{minor}/deb/"


def repo_id(url: str) -> str:
    """As tests/fakebin/_lib.sh names a served directory."""
    return "".join(c if c.isalnum() else "_" for c in url.rstrip("/"))


def serve(host: LocalHost, url: str, packages: dict[str, list[str]], key: bool = True) -> None:
    """The fake package server offers `url` (with its Release.key) and these package versions."""
    d = host.state / "repos" / repo_id(url)
    d.mkdir(parents=True, exist_ok=True)
    lines = [f"{p} {v}" for p, vs in packages.items() for v in vs]
    (d / "Packages").write_text("\n".join(lines) + "\n")
    if key:
        (d / "Release.key").write_text("key\n")


ALL_137 = {
    "kubeadm": ["1.37.0-1.1", "1.37.2-1.1"],
    "kubelet": ["1.37.0-1.1", "1.37.2-1.1"],
    "kubectl": ["1.37.0-1.1", "1.37.2-1.1"],
}


class ClusterHost(LocalHost):
    """The first control plane: kubectl answers a 1.36 cluster; everything else runs locally
    on the fakes. Connected read-only, as the preflight connects it (any write would raise)."""

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        if "kubeadm-config" in cmd:
            return Result("kubernetesVersion: v1.36.4\n", "", 0)
        if "get nodes -o json" in cmd:
            items = [
                {
                    "metadata": {"name": n},
                    "status": {
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "nodeInfo": {"kubeletVersion": "v1.36.4"},
                    },
                }
                for n in ("k8scontrol01", "k8node01")
            ]
            return Result(json.dumps({"items": items}), "", 0)
        return super()._exec(cmd, stdin=stdin, timeout=timeout)


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """mktemp's directory for the test's commands: must be empty again afterwards."""
    t = tmp_path / "tmp"
    t.mkdir()
    monkeypatch.setenv("TMPDIR", str(t))
    return t


@pytest.fixture
def host(tmp_path: Path, tmpdir_env: Path) -> ClusterHost:
    h = ClusterHost("k8scontrol01", tmp_path / "state", dry_run=True)
    (h.state / "pkgs").mkdir(parents=True, exist_ok=True)
    for p in ("curl", "ca-certificates", "gpg"):
        (h.state / "pkgs" / p).touch()
    serve(h, PKGS_K8S.format(minor=36), {p: ["1.36.4-1.1"] for p in ALL_137})
    return h


def pkgs_source(minor: int) -> AptSource:
    base = PKGS_K8S.format(minor=minor)
    return AptSource("kubernetes", f"deb [signed-by={KEYRING}] {base} /", KEYRING,
                     f"{base}Release.key")  # fmt: skip


def inventory_file(tmp_path: Path, version: str, mirror: str | None = None) -> Path:
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["kubernetes"]["version"] = version
    if mirror:
        data["kubernetes"]["package_repo"] = {"url": mirror, "trusted": True}
    out = tmp_path / "hosts.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def test_missing_minor_is_refused_with_curls_answer(host: ClusterHost, tmpdir_env: Path) -> None:
    """pkgs.k8s.io without a v1.37 repository: its key URL answers 404, nothing else runs."""
    with pytest.raises(RepositoryUnusable) as exc:
        check_repository(host, pkgs_source(37), 37)
    msg = str(exc.value)
    assert "https://pkgs.k8s.io/core:/stable:/v1.37/deb/" in msg and "k8scontrol01" in msg
    assert "downloading its signing key failed: curl: (22)" in msg and "404" in msg
    assert not any(c.startswith("apt-get") for c in host.calls())
    assert host.mutating() == [] and list(tmpdir_env.iterdir()) == []


def test_mirror_without_the_minor_is_refused_with_apts_answer(
    host: ClusterHost, tmpdir_env: Path
) -> None:
    src = AptSource("kubernetes", "deb [trusted=yes] http://mirror.example/k8s/v1.37 /", None, None)
    said = r"failed: E: The repository 'http://mirror.example/k8s/v1.37  Release' does not have"
    with pytest.raises(RepositoryUnusable, match=r"apt-get update " + said):
        check_repository(host, src, 37)
    assert list(tmpdir_env.iterdir()) == []


def test_a_host_that_cannot_resolve_the_key_url_is_a_fault_not_a_missing_minor(
    host: ClusterHost, tmpdir_env: Path
) -> None:
    """curl exits 6 (no DNS): that says nothing about the minor. It used to read as "the
    repository is missing" (bad input, exit 2)."""
    serve(host, PKGS_K8S.format(minor=37), ALL_137)  # the repository exists
    (host.state / "offline").touch()
    with pytest.raises(RepositoryUnreachable) as exc:
        check_repository(host, pkgs_source(37), 37)
    msg = str(exc.value)
    assert "could not be reached: curl: (6) Could not resolve host: pkgs.k8s.io" in msg
    assert "not proof that the minor is missing" in msg and "k8scontrol01" in msg
    assert host.mutating() == [] and list(tmpdir_env.iterdir()) == []


def test_apt_warnings_for_an_unreachable_mirror_are_a_fault_not_an_empty_repository(
    host: ClusterHost, tmpdir_env: Path
) -> None:
    """apt 2.6's `update` exits 0 when it cannot resolve the mirror (W: Failed to fetch ...), so
    madison finds nothing: before, "it has no kubeadm 1.37.x" (exit 2) for a network fault."""
    serve(host, "http://mirror.example/k8s/v1.37", ALL_137, key=False)
    (host.state / "offline").touch()
    src = AptSource("kubernetes", "deb [trusted=yes] http://mirror.example/k8s/v1.37 /", None, None)
    with pytest.raises(RepositoryUnreachable, match=r"Could not resolve 'mirror\.example'"):
        check_repository(host, src, 37)
    assert list(tmpdir_env.iterdir()) == []


def test_a_404_stays_a_missing_repository_when_the_network_works(host: ClusterHost) -> None:
    """The split is by what curl and apt say: a 404 is an answer, so bad input as before."""
    with pytest.raises(RepositoryUnusable, match=r"curl: \(22\)"):
        check_repository(host, pkgs_source(37), 37)


def test_a_repository_without_kubelet_at_that_version_is_refused(host: ClusterHost) -> None:
    serve(host, PKGS_K8S.format(minor=37), {**ALL_137, "kubelet": ["1.37.0-1.1"]})
    with pytest.raises(RepositoryUnusable, match=r"kubeadm v1\.37\.2 but no kubelet v1\.37\.2"):
        check_repository(host, pkgs_source(37), 37)


def test_present_repository_gives_the_exact_target_with_the_new_keyring(
    host: ClusterHost, tmpdir_env: Path
) -> None:
    serve(host, PKGS_K8S.format(minor=37), ALL_137)
    found = check_repository(host, pkgs_source(37), 37)
    assert found.version == Version(1, 37, 2)
    assert found.packages == dict.fromkeys(("kubeadm", "kubelet", "kubectl"), "1.37.2-1.1")
    # apt saw only the temporary sources file and lists (the host's own stay untouched) and
    # the fake refuses a signed-by keyring that is not there: the new key was downloaded
    update = next(c for c in host.calls() if c.startswith("apt-get update"))
    for opt in ("Dir::Etc::sourcelist=", "Dir::Etc::sourceparts=-", "Dir::State::Lists=",
                "Dir::Cache::pkgcache=", "APT::Get::List-Cleanup=0"):  # fmt: skip
        assert f"-o {opt}" in update, update
    assert f"{tmpdir_env}/" in update
    assert "curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.37/deb/Release.key" in host.calls()
    assert not (host.state / "lists").exists()  # the default lists dir was never written
    assert host.mutating() == [] and list(tmpdir_env.iterdir()) == []


def test_the_host_keyring_is_not_what_the_test_uses(host: ClusterHost) -> None:
    """A source still signed-by the host's (old) keyring path fails on the strict fake: the
    test must sign with the downloaded one."""
    serve(host, PKGS_K8S.format(minor=37), ALL_137)
    src = pkgs_source(37)
    stale = AptSource(src.name, src.line, None, None)  # no download: keeps signed-by=KEYRING
    with pytest.raises(RepositoryUnusable, match="is not signed"):
        check_repository(host, stale, 37)


# ----- the task: before anything is written, in --dry-run too -----------------------------------
@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch, host: ClusterHost) -> dict[str, Any]:
    seen: dict[str, Any] = {"connect": [], "execute": None}

    def connect_all(inv: Any, names: list[str], *, dry_run: bool, **_: Any) -> dict[str, Host]:
        seen["connect"].append((list(names), dry_run))
        return {n: host for n in names}

    def execute(c: Any, steps: Any, **kw: Any) -> list[Any]:
        seen["execute"] = (steps, kw)
        return []

    monkeypatch.setattr("runbook.core.remote.connect_all", connect_all)
    monkeypatch.setattr(common, "execute", execute)
    monkeypatch.setenv("COLUMNS", "200")
    return seen


def run_upgrade(inventory: Path) -> None:
    day2.upgrade(Context(Config(overrides={"runbook": {"inventory": str(inventory)}})),
                 dry_run=True)  # fmt: skip


def upgrade_to_137_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Any, str, Path]:
    """`cluster.upgrade` to 1.37 from the mirror the fakes serve: its exit code, its output
    (whitespace folded) and the inventory file."""
    inventory = inventory_file(tmp_path, "1.37", mirror="http://mirror.example/k8s/v1.37")
    with pytest.raises(Exit) as exc:
        run_upgrade(inventory)
    return exc.value.code, " ".join(capsys.readouterr().out.split()), inventory


def test_task_refuses_a_missing_minor_before_any_step(
    task_env: dict[str, Any],
    host: ClusterHost,
    tmp_path: Path,
    tmpdir_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, inventory = upgrade_to_137_exits(tmp_path, capsys)
    assert code == common.EXIT_INPUT
    assert f"{inventory}: kubernetes.version 1.37: the package repository" in out
    assert "http://mirror.example/k8s/v1.37/ / (tested on k8scontrol01)" in out
    assert "does not have a Release file" in out and "nothing was changed on any host" in out
    assert task_env["execute"] is None  # no step ran: no host's sources were written
    assert task_env["connect"] == [(["k8scontrol01"], True)]  # read-only connection
    assert host.mutating() == [] and list(tmpdir_env.iterdir()) == []


def test_task_exits_1_when_the_repository_cannot_be_reached(
    task_env: dict[str, Any],
    host: ClusterHost,
    tmp_path: Path,
    tmpdir_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve(host, "http://mirror.example/k8s/v1.37", ALL_137, key=False)
    (host.state / "offline").touch()
    code, out, _ = upgrade_to_137_exits(tmp_path, capsys)
    assert code == common.EXIT_FAILED
    assert "could not be reached" in out and "nothing was changed on any host" in out
    assert task_env["execute"] is None
    assert host.mutating() == [] and list(tmpdir_env.iterdir()) == []


def test_dry_run_plan_names_the_exact_target(
    task_env: dict[str, Any], host: ClusterHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve(host, "http://mirror.example/k8s/v1.37", ALL_137, key=False)
    run_upgrade(inventory_file(tmp_path, "1.37", mirror="http://mirror.example/k8s/v1.37"))
    out = " ".join(capsys.readouterr().out.split())
    assert "repository v1.37 found, newest v1.37.2" in out
    assert any(c.startswith("apt-get update -q -o Dir::Etc::sourcelist=") for c in host.calls())
    steps, kw = task_env["execute"]
    assert kw["dry_run"] is True
    assert steps[0].name == "backup"
    # the plan's target comes from the tested repository, though the host's own apt does not
    # know 1.37 yet
    run: RunState = kw["run"]
    assert run.of(UpgradeRun).target == (Version(1, 37, 2), "1.37.2-1.1")
    inv = load_inventory(tmp_path / "hosts.yaml")
    masker = Masker()
    ui = Ui(make_console(masker, file=io.StringIO()), masker, assume_yes=True)
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(dry_run=True), run=run)
    change = ControlPlaneUpgraded(ctx, "k8scontrol02", first=False).check(
        Host("k8scontrol02"), Fact("kube-apiserver:v1.36.4", 0)
    )
    assert change is not None and "v1.36.4 -> v1.37.2" in change.summary


# ----- the same script against this machine's real apt (Debian 12: apt 2.6) --------------------
class RealHost(Host):
    """This machine, read-only: the script runs with the real apt-get/apt-cache."""

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
        return Result(p.stdout, p.stderr, p.returncode)


def _apt_state() -> dict[str, float]:
    """What the test must leave alone: the machine's lists and apt's package caches."""
    paths = [Path("/var/lib/apt/lists"), *Path("/var/lib/apt/lists").iterdir()]
    paths += list(Path("/var/cache/apt").glob("*.bin"))
    return {str(p): p.stat().st_mtime for p in paths}


@pytest.mark.skipif(
    shutil.which("apt-get") is None or os.geteuid() != 0, reason="needs apt-get, as root"
)
def test_real_apt_honours_the_isolating_options(tmp_path: Path, tmpdir_env: Path) -> None:
    from lab import aptrepo
    from lab.standins import build_debs

    repo = tmp_path / "v1.37"
    build_debs(repo, "1.37")
    aptrepo.index(repo)
    tmp_path.chmod(0o755)  # apt's file method reads the repository as _apt
    before = _apt_state()
    host = RealHost("this-machine", dry_run=True)
    src = AptSource("kubernetes", f"deb [trusted=yes] file:{repo} /", None, None)
    found = check_repository(host, src, 37)
    assert found.version == Version(1, 37, 0)
    assert found.packages == {"kubeadm": "1.37.0-1.1", "kubelet": "1.37.0-1.1",
                              "kubectl": "2:1.37.0-1.1"}  # fmt: skip
    missing = AptSource("kubernetes", f"deb [trusted=yes] file:{tmp_path}/v1.38 /", None, None)
    with pytest.raises(RepositoryUnusable, match=r"apt-get update failed: E: Failed to fetch"):
        check_repository(host, missing, 38)
    with pytest.raises(RepositoryUnusable, match=r"it has no kubeadm 1\.38\.x"):
        check_repository(host, src, 38)
    assert _apt_state() == before
    assert list(tmpdir_env.iterdir()) == []
