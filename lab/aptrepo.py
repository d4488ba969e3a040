"""The lab's local apt repositories (hosts have no other network).

Two, as a real server sees two: the lab's Debian repository (below), which also plays
pkgs.k8s.io (the kubeadm/kubelet/kubectl stand-ins) and carries Debian 12's REAL `containerd`
1.6 from packages.txt; and a simulated Docker repository (`build_docker`) with the
`containerd.io` stand-in, laid out like download.docker.com (`<url> <codename> stable`), its
InRelease signed by a lab key that the runbook fetches with curl and dearmors into its own
keyring, as it does with Docker's.

Why `--download-only`: hosts overlay the root filesystem, so their dpkg database starts as the
machine's; apt in the root namespace downloads exactly the packages a host lacks (e.g. haproxy,
heartbeat and their dependencies) without installing anything here. The debs are cached under the
state dir (kept by `down`); the repo is a flat `deb [trusted=yes] file:/run/labrepo ./` with
Packages(.gz) and a minimal Release (without one apt probes Packages.xz/.bz2 and prints errors).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

PACKAGES_TXT = Path(__file__).with_name("packages.txt")


@dataclass(frozen=True)
class RepoResult:
    packages: tuple[str, ...]
    debs: int
    size: int
    downloaded: bool
    seconds: float


def wanted_packages(path: Path = PACKAGES_TXT) -> tuple[str, ...]:
    lines = (ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines())
    return tuple(ln for ln in lines if ln)


def _manifest(pkgs: tuple[str, ...]) -> str:
    return hashlib.sha256(" ".join(sorted(pkgs)).encode()).hexdigest()


def _cache_complete(cache: Path, pkgs: tuple[str, ...]) -> bool:
    mf = cache / "manifest.json"
    try:
        data = json.loads(mf.read_text())
    except (OSError, ValueError):
        return False
    return data.get("wanted") == _manifest(pkgs) and all((cache / d).exists() for d in data["debs"])


def download(cache: Path, pkgs: tuple[str, ...]) -> None:
    """apt-get --download-only into `cache` (package lists must exist: install-machine.sh updates
    them)."""
    (cache / "partial").mkdir(parents=True, exist_ok=True)
    argv = [
        "apt-get",
        "install",
        "--download-only",
        "--no-install-recommends",
        "-y",
        "-q",
        "-o",
        f"Dir::Cache::archives={cache}",
        *pkgs,
    ]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    r = subprocess.run(argv, text=True, capture_output=True, env=env)
    if r.returncode != 0 and "Unable to locate package" in r.stderr + r.stdout:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        r = subprocess.run(argv, text=True, capture_output=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"apt-get --download-only {' '.join(pkgs)} failed:\n{r.stderr.strip()}")
    debs = sorted(p.name for p in cache.glob("*.deb"))
    (cache / "manifest.json").write_text(json.dumps({"wanted": _manifest(pkgs), "debs": debs}))


def _packages(root: Path, scan: str, out: Path) -> None:
    """`out`/Packages and Packages.gz for the debs under root/scan (Filename relative to root)."""
    r = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", scan, "/dev/null"],
        cwd=root,
        text=True,
        capture_output=True,
        check=True,
    )
    # the per-minor Kubernetes repositories below k8s/ (lab.k8srepo) are repositories of their
    # own, as pkgs.k8s.io's are: not part of the flat one
    paragraphs = [p for p in r.stdout.split("\n\n") if "\nFilename: ./k8s/" not in f"\n{p}"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "Packages").write_text("\n\n".join(paragraphs))
    with open(out / "Packages", "rb") as src, gzip.open(out / "Packages.gz", "wb", 9) as dst:
        shutil.copyfileobj(src, dst)


def _sha256(base: Path, names: tuple[str, ...]) -> list[str]:
    """Release's SHA256 lines for files relative to `base`."""
    out = ["SHA256:"]
    for f in names:
        data = (base / f).read_bytes()
        out.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {f}")
    return out


def index(repo: Path) -> None:
    """Packages, Packages.gz and an unsigned Release (hosts use [trusted=yes])."""
    _packages(repo, ".", repo)
    lines = [
        "Origin: rblab",
        "Label: rblab",
        "Suite: rblab",
        "Codename: rblab",
        f"Date: {formatdate(usegmt=True)}",
        "Architectures: amd64 all",
        *_sha256(repo, ("Packages", "Packages.gz")),
    ]
    (repo / "Release").write_text("\n".join(lines) + "\n")


def _standins_stamp(version: str | None) -> str:
    """Identifies the stand-in debs: the Kubernetes version and the stand-ins' sources."""
    if version is None:
        return ""
    src = Path(__file__).resolve().parent / "standins"
    h = hashlib.sha256(version.encode())
    for f in sorted(src.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(f.relative_to(src).as_posix().encode() + f.read_bytes())
    return f"\nstandins {version} {h.hexdigest()}"


def build(
    cache: Path,
    repo: Path,
    pkgs: tuple[str, ...] | None = None,
    *,
    k8s_version: str | None = None,
) -> RepoResult:
    """Ensure the repo offers `pkgs` (default: lab/packages.txt) and, with `k8s_version`, the
    Kubernetes stand-in packages (lab/standins); skip what is already done."""
    t0 = time.monotonic()
    pkgs = pkgs or wanted_packages()
    downloaded = False
    if not _cache_complete(cache, pkgs):
        download(cache, pkgs)
        downloaded = True
    debs = json.loads((cache / "manifest.json").read_text())["debs"]
    repo.mkdir(parents=True, exist_ok=True)
    stamp = repo / ".manifest"
    want = _manifest(tuple(debs)) + _standins_stamp(k8s_version)
    if not stamp.exists() or stamp.read_text() != want or not (repo / "Release").exists():
        for old in repo.glob("*.deb"):
            old.unlink()
        for d in debs:
            os.link(cache / d, repo / d) if _same_fs(cache, repo) else shutil.copy2(
                cache / d, repo / d
            )
        if k8s_version is not None:
            from lab.standins import build_debs

            build_debs(repo, k8s_version)
        index(repo)
        stamp.write_text(want)
    size = sum((cache / d).stat().st_size for d in debs)
    return RepoResult(pkgs, len(debs), size, downloaded, time.monotonic() - t0)


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def host_release() -> tuple[str, str]:
    """(VERSION_CODENAME, VERSION_ID) of the machine, whose root fs the lab hosts overlay."""
    text = Path("/etc/os-release").read_text()
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return fields["VERSION_CODENAME"].strip('"'), fields["VERSION_ID"].strip('"')


DOCKER_KEY_UID = "rblab Docker repository stand-in <docker@rblab.invalid>"


def _gpg(keydir: Path, *args: str, stdin: bytes | None = None) -> bytes:
    env = {**os.environ, "GNUPGHOME": str(keydir)}
    r = subprocess.run(
        ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "", *args],
        input=stdin,
        capture_output=True,
        env=env,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {r.stderr.decode(errors='replace')}")
    return r.stdout


def _signing_key(keydir: Path) -> None:
    """The lab's repository key, made once (kept with the state dir like the host keys)."""
    keydir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not _gpg(keydir, "--list-secret-keys", "--with-colons").strip():
        _gpg(keydir, "--quick-gen-key", DOCKER_KEY_UID, "ed25519", "sign", "0")


def build_docker(root: Path, keydir: Path, k8s_version: str) -> Path:
    """`<root>/linux/debian`: dists/<codename>/{InRelease,Release}, stable/binary-amd64/Packages
    and pool/stable/containerd.io_…deb, plus `gpg` (the armored public key, like Docker's
    https://download.docker.com/linux/debian/gpg). Skipped when nothing changed."""
    from lab.standins import build_containerd_io

    suite, version_id = host_release()
    base = root / "linux" / "debian"
    stamp = root / ".manifest"
    want = f"{suite}{_standins_stamp(k8s_version)}"
    if stamp.exists() and stamp.read_text() == want and (base / "gpg").exists():
        return base
    if root.exists():
        shutil.rmtree(root)
    pool = base / "pool" / "stable"
    build_containerd_io(pool, suite, version_id, k8s_version)
    dist = base / "dists" / suite
    _packages(base, "pool", dist / "stable" / "binary-amd64")
    lines = [
        "Origin: Docker",
        "Label: Docker",
        f"Suite: {suite}",
        f"Codename: {suite}",
        f"Date: {formatdate(usegmt=True)}",
        "Architectures: amd64",
        "Components: stable",
        "Description: rblab stand-in for Docker's repository (containerd.io only)",
        *_sha256(dist, ("stable/binary-amd64/Packages", "stable/binary-amd64/Packages.gz")),
    ]
    release = "\n".join(lines) + "\n"
    (dist / "Release").write_text(release)
    _signing_key(keydir)
    (dist / "InRelease").write_bytes(
        _gpg(keydir, "--clearsign", "--digest-algo", "SHA512", stdin=release.encode())
    )
    (base / "gpg").write_bytes(_gpg(keydir, "--armor", "--export"))
    agent = {**os.environ, "GNUPGHOME": str(keydir)}
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=agent, check=False)
    stamp.write_text(want)
    return base
