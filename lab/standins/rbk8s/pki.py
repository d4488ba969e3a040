"""LAB STAND-IN — a real cluster CA and real certificates, made with the openssl CLI.

The CA, the apiserver's serving certificate (with the configured SANs), admin.conf's client
certificate and the kubelets' client certificates are genuine X.509, so TLS in the lab (HAProxy
checks, kubectl, join discovery with the CA-hash pin) is real TLS.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import subprocess
import tempfile
from pathlib import Path

import yaml


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    r = subprocess.run(["openssl", *args], input=stdin, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {r.stderr.decode(errors='replace')}")
    return r.stdout


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)


def make_ca(pki: Path) -> None:
    key = _openssl("genrsa", "2048")
    _write(pki / "ca.key", key, 0o600)
    crt = _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "/dev/stdin",
        "-days",
        "3650",
        "-subj",
        "/CN=kubernetes",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
        stdin=key,
    )
    _write(pki / "ca.crt", crt, 0o644)


def issue(
    pki: Path, subject: str, *, sans: tuple[str, ...] = (), server: bool = False
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) signed by pki/ca.*."""
    key = _openssl("genrsa", "2048")
    with tempfile.TemporaryDirectory() as d:
        Path(d, "k").write_bytes(key)
        csr = _openssl("req", "-new", "-key", f"{d}/k", "-subj", subject)
        ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment"]
        # the serving cert doubles as the peer client cert for state replication
        ext.append("extendedKeyUsage=" + ("serverAuth,clientAuth" if server else "clientAuth"))
        if sans:
            parts = [f"IP:{s}" if _is_ip(s) else f"DNS:{s}" for s in sans]
            ext.append("subjectAltName=" + ",".join(parts))
        Path(d, "ext").write_text("\n".join(ext) + "\n")
        crt = _openssl(
            "x509",
            "-req",
            "-CA",
            str(pki / "ca.crt"),
            "-CAkey",
            str(pki / "ca.key"),
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            f"{d}/ext",
            "-in",
            "/dev/stdin",
            stdin=csr,
        )
    return crt, key


def sign_csr(pki: Path, csr: bytes, *, days: int = 365) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        Path(d, "ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n"
        )
        return _openssl(
            "x509",
            "-req",
            "-CA",
            str(pki / "ca.crt"),
            "-CAkey",
            str(pki / "ca.key"),
            "-CAcreateserial",
            "-days",
            str(days),
            "-extfile",
            f"{d}/ext",
            "-in",
            "/dev/stdin",
            stdin=csr,
        )


def new_csr(subject: str) -> tuple[bytes, bytes]:
    """(csr, key) for a client certificate to be signed by the cluster (TLS bootstrap)."""
    key = _openssl("genrsa", "2048")
    with tempfile.TemporaryDirectory() as d:
        Path(d, "k").write_bytes(key)
        return _openssl("req", "-new", "-key", f"{d}/k", "-subj", subject), key


def ca_hash(ca_pem: bytes) -> str:
    """kubeadm's discovery pin: sha256 of the CA's DER SubjectPublicKeyInfo."""
    pub = _openssl("x509", "-pubkey", "-noout", stdin=ca_pem)
    der = _openssl("pkey", "-pubin", "-outform", "DER", stdin=pub)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def subject_cn(cert_pem: bytes) -> str:
    out = _openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", stdin=cert_pem).decode()
    for part in out.strip().removeprefix("subject=").split(","):
        if part.strip().startswith("CN="):
            return part.strip()[3:]
    return ""


def kubeconfig(server: str, ca: bytes, crt: bytes, key: bytes, user: str) -> str:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kubernetes",
                    "cluster": {
                        "server": f"https://{server}",
                        "certificate-authority-data": b64(ca),
                    },
                }
            ],
            "contexts": [
                {"name": f"{user}@kubernetes", "context": {"cluster": "kubernetes", "user": user}}
            ],
            "current-context": f"{user}@kubernetes",
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate-data": b64(crt), "client-key-data": b64(key)},
                }
            ],
        },
        sort_keys=False,
    )


def write_kubeconfig(path: Path, text: str) -> None:
    _write(path, text.encode(), 0o600)


def write_pair(pki: Path, name: str, crt: bytes, key: bytes) -> None:
    _write(pki / f"{name}.crt", crt, 0o644)
    _write(pki / f"{name}.key", key, 0o600)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
