"""LAB STAND-IN — `kubeadm certs check-expiration` and `kubeadm certs renew all|NAME`.

Real dates: the table reads the certificates' own notAfter (openssl), residual time as kubeadm
prints it (`364d`, `23h`, `<invalid>` when expired). Renewal issues a new key and certificate
with the same subject, SANs and usages, signed by the same CA, valid one year, and rewrites
admin.conf's embedded client certificate; like kubeadm it restarts nothing ("You must restart
the kube-apiserver, …"). Unknown certificate names are refused; on a host without admin.conf
(a worker) check-expiration fails as kubeadm's does (it reads kubeadm-config from the cluster).
"""

from __future__ import annotations

import base64
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

from . import pki

K = Path("/etc/kubernetes")
PKI = K / "pki"
# kubeadm's name, file (a kubeconfig for *.conf), CA name, what kubeadm says when renewing
CERTS = (
    (
        "admin.conf",
        K / "admin.conf",
        "ca",
        "certificate embedded in the kubeconfig file for the admin to use and for kubeadm itself",
    ),
    ("apiserver", PKI / "apiserver.crt", "ca", "certificate for serving the Kubernetes API"),
    (
        "etcd-healthcheck-client",
        PKI / "etcd" / "healthcheck-client.crt",
        "etcd-ca",
        "certificate for liveness probes to healthcheck etcd",
    ),
    ("etcd-server", PKI / "etcd" / "server.crt", "etcd-ca", "certificate for serving etcd"),
)
CAS = (("ca", PKI / "ca.crt"), ("etcd-ca", PKI / "etcd" / "ca.crt"))


class Fail(Exception):
    pass


def _pem(path: Path) -> bytes:
    if path.suffix == ".conf":
        conf = yaml.safe_load(path.read_text())
        return base64.b64decode(conf["users"][0]["user"]["client-certificate-data"])
    return path.read_bytes()


def not_after(cert: bytes) -> datetime:
    out = pki._openssl("x509", "-noout", "-enddate", stdin=cert).decode().strip()
    when = out.removeprefix("notAfter=")
    return datetime.strptime(when, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def residual(until: datetime, now: datetime) -> str:
    s = (until - now).total_seconds()
    if s <= 0:
        return "<invalid>"
    if s >= 2 * 365 * 86400:
        return f"{int(s // (365 * 86400))}y"
    if s >= 2 * 86400:
        return f"{int(s // 86400)}d"
    if s >= 2 * 3600:
        return f"{int(s // 3600)}h"
    return f"{int(s // 60)}m"


def check_expiration(now: datetime | None = None) -> None:
    if not (K / "admin.conf").exists():
        raise Fail(
            "[check-expiration] Error reading configuration from the Cluster. Falling back to "
            f"default configuration\nerror: open {K / 'admin.conf'}: no such file or directory"
        )
    now = now or datetime.now(UTC)
    fmt = "%b %d, %Y %H:%M UTC"
    head = f"{'CERTIFICATE':<27}{'EXPIRES':<25}{'RESIDUAL TIME':<16}"
    print(f"{head}{'CERTIFICATE AUTHORITY':<24}EXTERNALLY MANAGED")
    for name, path, ca, _ in CERTS:
        if path.exists():
            end = not_after(_pem(path))
            print(f"{name:<27}{end.strftime(fmt):<25}{residual(end, now):<16}{ca:<24}no")
    print(f"\n{'CERTIFICATE AUTHORITY':<24}{'EXPIRES':<25}{'RESIDUAL TIME':<16}EXTERNALLY MANAGED")
    for name, path in CAS:
        if path.exists():
            end = not_after(path.read_bytes())
            print(f"{name:<24}{end.strftime(fmt):<25}{residual(end, now):<16}no")


def _details(cert: bytes) -> tuple[str, tuple[str, ...], bool]:
    """(subject as /O=…/CN=…, SANs, serving certificate?) of a certificate."""
    subj = pki._openssl("x509", "-noout", "-subject", "-nameopt", "compat", stdin=cert).decode()
    subject = subj.strip().removeprefix("subject=").strip()
    text = pki._openssl("x509", "-noout", "-text", stdin=cert).decode()
    sans = tuple(v.strip() for v in re.findall(r"(?:DNS|IP Address):([^,\n]+)", text))
    return (
        subject if subject.startswith("/") else "/" + subject.replace(", ", "/"),
        sans,
        ("TLS Web Server Authentication" in text),
    )


def renew(name: str) -> None:
    entries = [c for c in CERTS if name in ("all", c[0])]
    if not entries:
        raise Fail(f'unknown command "{name}" for "kubeadm certs renew"')
    for _name, path, ca, what in entries:
        if not path.exists():
            continue
        subject, sans, server = _details(_pem(path))
        ca_dir = PKI / "etcd" if ca == "etcd-ca" else PKI
        crt, key = pki.issue(ca_dir, subject, sans=sans, server=server)
        if path.suffix == ".conf":
            conf = yaml.safe_load(path.read_text())
            server_url = conf["clusters"][0]["cluster"]["server"].removeprefix("https://")
            user = conf["users"][0]["name"]
            pki.write_kubeconfig(
                path, pki.kubeconfig(server_url, (PKI / "ca.crt").read_bytes(), crt, key, user)
            )
        else:
            pki.write_pair(path.parent, path.stem, crt, key)
        print(f"{what} renewed")
    print(
        "\nDone renewing certificates. You must restart the kube-apiserver, "
        "kube-controller-manager, kube-scheduler and etcd, so that they can use the new "
        "certificates."
    )


def main(argv: list[str]) -> int:
    try:
        if argv == ["check-expiration"]:
            check_expiration()
            return 0
        if argv[:1] == ["renew"] and len(argv) == 2:
            renew(argv[1])
            return 0
        raise Fail(f"stand-in kubeadm: unsupported: certs {' '.join(argv)}")
    except Fail as exc:
        sys.stderr.write(
            f"{exc}\nTo see the stack trace of this error execute with --v=5 or higher\n"
        )
        return 1
