"""`inv render --out`: never outside its folder, never clobbering, never through a symlink;
every refusal is `--out: reason`, exit 2, no traceback, nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runbook.render.outdir import OutDirError, OutFile, system_reason, write_tree
from tests.test_cli import INV, REPO, inv


def render(out: str, *extra: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return inv(
        "render", "--host", "k8slb01", "--out", out, *extra, inventory=REPO / "hosts.yaml", env=env
    )


def assert_refused(r: subprocess.CompletedProcess[str], fragment: str) -> None:
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert "--out: " in text and fragment in text.replace("\n", " "), text
    assert "Traceback" not in text


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("out", "fragment"),
    [
        ("", "must not be empty"),
        ("/", "is the root directory"),
        ("/etc", "is a system directory"),
        ("/usr/local/sbin", "inside the system directory /usr"),
        ("/proc/self/rendered", "inside the system directory /proc"),
        ("/sys/kernel/x", "inside the system directory /sys"),
        ("/var/lib/rendered", "inside the system directory /var/lib"),
        ("/tmp", "top-level system directory"),
        ("/tmp/../etc/../../boot/x", "inside the system directory /boot"),
    ],
)
def test_system_directories_are_refused(out: str, fragment: str) -> None:
    assert_refused(render(out), fragment)


@pytest.mark.bad_input
def test_a_home_directory_itself_is_refused_but_not_a_folder_in_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert_refused(render(str(home), env={"HOME": str(home)}), "is a home directory itself")
    assert_refused(render("~", env={"HOME": str(home)}), "is a home directory itself")
    r = render("~/rendered", env={"HOME": str(home)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert (home / "rendered" / "etc" / "haproxy" / "haproxy.cfg").is_file()


@pytest.mark.bad_input
def test_a_symlink_to_a_system_directory_is_resolved_and_refused(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc")
    assert_refused(render(str(tmp_path / "link")), "is a system directory")


@pytest.mark.bad_input
def test_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("keep")
    assert_refused(render(str(f)), "exists and is not a directory")
    assert f.read_text() == "keep"


@pytest.mark.bad_input
def test_non_empty_out_needs_force_and_force_replaces_atomically(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "etc" / "haproxy").mkdir(parents=True)
    cfg = out / "etc" / "haproxy" / "haproxy.cfg"
    cfg.write_text("mine")
    assert_refused(render(str(out)), "is not empty")
    assert cfg.read_text() == "mine"
    r = render(str(out), "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "frontend" in cfg.read_text()
    leftovers = [p for p in out.rglob("*") if ".rb-tmp-" in p.name]
    assert not leftovers


@pytest.mark.bad_input
def test_a_symlinked_directory_inside_out_is_not_followed(tmp_path: Path) -> None:
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.mkdir()
    (out / "etc").symlink_to(victim)
    assert_refused(render(str(out), "--force"), "etc is a symbolic link; refusing to follow it")
    assert list(victim.iterdir()) == []


@pytest.mark.bad_input
def test_a_symlinked_file_inside_out_is_replaced_not_followed(tmp_path: Path) -> None:
    out, victim = tmp_path / "out", tmp_path / "victim.cfg"
    victim.write_text("precious")
    (out / "etc" / "haproxy").mkdir(parents=True)
    (out / "etc" / "haproxy" / "haproxy.cfg").symlink_to(victim)
    r = render(str(out), "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert victim.read_text() == "precious"
    assert not (out / "etc" / "haproxy" / "haproxy.cfg").is_symlink()


@pytest.mark.bad_input
def test_read_only_out_is_refused_with_the_reason(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    argv = [INV, "-r", str(REPO), "render", "--host", "k8slb01", "--out", str(ro / "x")]
    env = {**os.environ, "INVOKE_RUNBOOK_INVENTORY": str(REPO / "hosts.yaml")}
    if os.geteuid() == 0:  # root writes through mode bits: use a read-only mount instead
        if not shutil.which("unshare"):
            pytest.fail("root without unshare(1): cannot make a read-only directory")
        script = f'mount -t tmpfs -o ro tmpfs "{ro}" && exec "$@"'
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv]
        fragment = "Read-only file system"
    else:
        ro.chmod(0o555)
        fragment = "Permission denied"
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert_refused(r, fragment)


# --- the writer itself ---


def test_write_tree_modes_and_paths(tmp_path: Path) -> None:
    write_tree(
        tmp_path / "a" / "out", [OutFile("etc/ha.d/authkeys", b"auth 1\n", 0o600)], force=False
    )
    f = tmp_path / "a" / "out" / "etc" / "ha.d" / "authkeys"
    assert f.read_bytes() == b"auth 1\n" and (f.stat().st_mode & 0o777) == 0o600
    assert os.listdir(tmp_path / "a") == ["out"]  # no temporary directory left


@pytest.mark.bad_input
def test_a_new_out_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    files = [OutFile("etc/a", b"1", 0o644), OutFile("../escape", b"2", 0o644)]
    with pytest.raises(OutDirError):
        write_tree(tmp_path / "out", files, force=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.bad_input
@pytest.mark.parametrize("path", ["../escape", "etc/../../escape", "", "/"])
def test_paths_outside_the_directory_are_refused(tmp_path: Path, path: str) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(OutDirError, match="not a path below the output directory"):
        write_tree(tmp_path / "out", [OutFile(path, b"x", 0o644)], force=False)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == []


def test_system_reason_allows_ordinary_folders(tmp_path: Path) -> None:
    assert system_reason(str(tmp_path / "rendered")) is None
    assert system_reason("/var/tmp/rendered") is None
    assert system_reason("/srv") is not None and system_reason("/home") is not None
