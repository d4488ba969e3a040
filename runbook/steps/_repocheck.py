"""The new minor's package repository, tested on one host before any host's sources change.

`cluster.upgrade` switches every Kubernetes host to the repository of the inventory's minor
(pkgs.k8s.io has one per minor). A minor whose repository does not exist yet (or a mirror that
lacks it) written everywhere would leave every host with a broken source list and `apt-get
update` failing for all later apt work. So the source is first tried on one host in isolation:
its keyring downloaded to a temporary directory, the source line (signed by that keyring) in a
temporary sources file, and apt pointed at only that file and a temporary lists directory:

    apt-get update -o Dir::Etc::sourcelist=T/sources.list -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists=T/lists -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \
        -o APT::Get::List-Cleanup=0
    apt-cache (same options) madison kubeadm kubelet kubectl

`sourceparts=-` leaves `/etc/apt/sources.list.d` out, the lists directory keeps the host's own
lists untouched, the empty cache paths keep apt from writing its package caches under
/var/cache/apt. Nothing of the host's apt configuration changes and the directory is removed
when the script ends (a trap), so the test also runs in --dry-run.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..core.remote import Host
from ..render.k8sfiles import AptSource
from ..tools.k8sversions import Version, exact_package, newest_package

PACKAGES = ("kubeadm", "kubelet", "kubectl")
# the script's own exit codes: which phase failed (apt-get exits 100, curl 1..99)
KEY_FAILED, UPDATE_FAILED = 111, 112
CURL_EXIT = "curl-exit="  # the check script prints curl's own exit code after this, on stderr
_WHAT = {KEY_FAILED: "downloading its signing key", UPDATE_FAILED: "apt-get update"}


@dataclass(frozen=True)
class RepoTarget:
    """The repository serves the minor: its newest kubeadm and that exact version of all three."""

    version: Version
    packages: dict[str, str]  # package -> exact deb version


class RepositoryUnusable(Exception):
    """The repository is missing or lacks the minor's packages (nothing changed anywhere)."""


class RepositoryUnreachable(Exception):
    """The host could not reach the repository (name resolution, connection, timeout, a 5xx):
    a fault, not proof that the minor is missing (nothing changed anywhere)."""


# curl's exit codes for "could not get there": resolve (5, 6), connect (7), timeout (28), TLS
# handshake (35), nothing or a broken answer (52, 56)
_CURL_UNREACHABLE = frozenset({5, 6, 7, 28, 35, 52, 56})
# what apt says when it could not fetch for a network reason (apt 2.6 reports these as W: lines
# and `apt-get update` still exits 0; a 404 is an E: line and exit 100)
_NETWORK_WORDS = (
    "Could not resolve",
    "Temporary failure resolving",
    "Could not connect",
    "Unable to connect",
    "Connection failed",
    "Connection timed out",
    "Connection refused",
    "No route to host",
    "Network is unreachable",
    "503  Service Unavailable",
    "502  Bad Gateway",
    "504  Gateway Time",
)


def isolated_apt_options(tmp: str) -> str:
    """apt options that read only `tmp`/sources.list and keep lists and caches in `tmp`."""
    return " ".join(
        f'-o "{o}"'
        for o in (
            f"Dir::Etc::sourcelist={tmp}/sources.list",
            "Dir::Etc::sourceparts=-",
            f"Dir::State::Lists={tmp}/lists",
            "Dir::Cache::pkgcache=",
            "Dir::Cache::srcpkgcache=",
        )
    )


def _source_line(src: AptSource) -> str:
    """A shell word that prints the source line, signed by the temporary keyring."""
    if src.keyring is None or src.key_url is None:
        return shlex.quote(src.line)
    before, found, after = src.line.partition(f"signed-by={src.keyring}")
    if not found:
        raise ValueError(f"{src.name}: the source line does not name signed-by={src.keyring}")
    return f'{shlex.quote(before + "signed-by=")}"$t/key.gpg"{shlex.quote(after)}'


def check_script(src: AptSource) -> str:
    """The isolated test: key, `apt-get update` and `apt-cache madison` in a temporary dir."""
    opts = isolated_apt_options("$t")
    key = ""
    if src.keyring and src.key_url:
        # no pipe: a failed download fails here (as AptRepo.apply does it)
        key = (
            f"k=$(curl -fsSL {shlex.quote(src.key_url)}) "
            f'|| {{ echo "{CURL_EXIT}$?" >&2; exit {KEY_FAILED}; }}; '
            'printf \'%s\\n\' "$k" | gpg --dearmor --yes -o "$t/key.gpg" '
            f'|| exit {KEY_FAILED}; chmod 0644 "$t/key.gpg"; '
        )
    return (
        "t=$(mktemp -d) || exit 1; trap 'rm -rf \"$t\"' EXIT; "
        # apt fetches as _apt: the directory must be reachable (contents: nothing secret)
        'chmod 0755 "$t" && mkdir -p "$t/lists/partial" || exit 1; '
        + key
        + f"printf '%s\\n' {_source_line(src)} > \"$t/sources.list\"; "
        f"apt-get update -q {opts} -o APT::Get::List-Cleanup=0 >&2 || exit {UPDATE_FAILED}; "
        f"apt-cache {opts} madison {' '.join(PACKAGES)}"
    )


def _where(src: AptSource) -> str:
    return src.line.split("]", 1)[-1].strip() if "]" in src.line else src.line


def _said(stderr: str) -> str:
    """apt's (or curl's) own error lines, else the last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "curl:", "gpg:"))]
    return " | ".join(errors or lines[-1:] or ["(no output)"])[-600:]


def _unreachable(exited: int, stderr: str) -> str | None:
    """What says the host could not reach the repository (None: it did, or it answered)."""
    lines = [ln.strip() for ln in stderr.splitlines()]
    if exited == KEY_FAILED:
        codes = [ln.removeprefix(CURL_EXIT) for ln in lines if ln.startswith(CURL_EXIT)]
        curl = [ln for ln in lines if ln.startswith("curl:")]
        if codes and codes[-1].isdigit() and int(codes[-1]) in _CURL_UNREACHABLE:
            return " | ".join(curl) or f"curl exited {codes[-1]}"
        if any(w in ln for ln in curl for w in ("returned error: 50", "error: 429")):
            return " | ".join(curl)
        return None
    if exited in (0, UPDATE_FAILED):
        fetch = [ln for ln in lines if ln.startswith(("W:", "E:")) and "Failed to fetch" in ln]
        if fetch and all(any(w in ln for w in _NETWORK_WORDS) for ln in fetch):
            return " | ".join(fetch)[-600:]
    return None


def check_repository(host: Host, src: AptSource, minor: int) -> RepoTarget:
    """Test `src` on `host` in isolation: the newest 1.`minor`.x kubeadm it offers, with kubelet
    and kubectl at that exact version; RepositoryUnusable (what apt said) otherwise, and
    RepositoryUnreachable when the host could not reach it (DNS, connection, timeout, 5xx):
    apt's `update` then exits 0 with warnings and would read as "no such minor"."""
    res = host.query(check_script(src), timeout=600, ok_codes=None)
    where = f"the package repository {_where(src)} (tested on {host.name})"
    network = _unreachable(res.exited, res.stderr)
    if network is not None:
        raise RepositoryUnreachable(
            f"{where} could not be reached: {network} (a network problem, not proof that the "
            "minor is missing; re-run once the host reaches it)"
        )
    if res.exited != 0:
        step = _WHAT.get(res.exited, "the test")
        raise RepositoryUnusable(f"{where}: {step} failed: {_said(res.stderr)}")
    by_package: dict[str, list[str]] = {p: [] for p in PACKAGES}
    for line in res.stdout.splitlines():
        name = line.split("|", 1)[0].strip()
        if name in by_package:
            by_package[name].append(line)
    newest = newest_package("\n".join(by_package["kubeadm"]), minor)
    if newest is None:
        raise RepositoryUnusable(f"{where}: it has no kubeadm 1.{minor}.x")
    version = newest[0]
    exact = {p: exact_package("\n".join(by_package[p]), version) for p in PACKAGES}
    missing = [p for p, v in exact.items() if v is None]
    if missing:
        raise RepositoryUnusable(
            f"{where}: it has kubeadm {version} but no {' and '.join(missing)} {version}"
        )
    return RepoTarget(version, {p: v for p, v in exact.items() if v is not None})
