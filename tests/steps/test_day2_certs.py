"""Certificate expiry and renewal: the stand-in's `kubeadm certs check-expiration` reads the
real certificates' dates; the runbook parses that table (residual times as kubeadm prints them),
picks the soonest leaf certificate, and renews only a control plane under the threshold; the
stand-in's `renew` keeps subject, SANs and usages and gives a new year."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from lab.standins.rbk8s import certs, pki
from runbook.core.remote import Fact, Host
from runbook.status import certexpiry
from runbook.steps.renew_certs import CertsFresh


@pytest.fixture
def control_plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    k = tmp_path / "kubernetes"
    p = k / "pki"
    pki.make_ca(p)
    (p / "etcd").mkdir()
    for f in ("ca.crt", "ca.key"):
        (p / "etcd" / f).write_bytes((p / f).read_bytes())
    crt, key = pki.issue(p, "/CN=kube-apiserver", sans=("kubernetes", "10.143.0.2"), server=True)
    pki.write_pair(p, "apiserver", crt, key)
    acrt, akey = pki.issue(p, "/O=kubeadm:cluster-admins/CN=kubernetes-admin")
    conf = pki.kubeconfig(
        "10.143.0.50:6443", (p / "ca.crt").read_bytes(), acrt, akey, "kubernetes-admin"
    )
    pki.write_kubeconfig(k / "admin.conf", conf)
    monkeypatch.setattr(certs, "K", k)
    monkeypatch.setattr(certs, "PKI", p)
    monkeypatch.setattr(
        certs,
        "CERTS",
        (
            ("admin.conf", k / "admin.conf", "ca", "admin"),
            ("apiserver", p / "apiserver.crt", "ca", "apiserver"),
            ("etcd-server", p / "etcd" / "server.crt", "etcd-ca", "etcd"),  # absent: skipped
        ),
    )
    monkeypatch.setattr(certs, "CAS", (("ca", p / "ca.crt"),))
    return k


def table(capsys: pytest.CaptureFixture[str], now: datetime) -> str:
    certs.check_expiration(now)
    return capsys.readouterr().out


def test_check_expiration_as_the_runbook_reads_it(
    control_plane: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    parsed = certexpiry.parse(table(capsys, now))
    assert [c.name for c in parsed] == ["admin.conf", "apiserver", "ca"]
    assert parsed[-1].authority and parsed[-1].residual == "9y"
    first = certexpiry.soonest(parsed)
    assert first is not None and 363 <= first.days <= 365 and not first.authority
    later = certexpiry.parse(table(capsys, now + timedelta(days=355)))
    assert 8 <= certexpiry.soonest(later).days <= 10  # type: ignore[union-attr]
    expired = certexpiry.parse(table(capsys, now + timedelta(days=400)))
    assert {c.residual for c in expired if not c.authority} == {"<invalid>"}


def test_renew_keeps_subject_sans_and_usage_with_a_new_key(
    control_plane: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = control_plane / "pki"
    old_crt, old_key = (p / "apiserver.crt").read_bytes(), (p / "apiserver.key").read_bytes()
    old_admin = yaml.safe_load((control_plane / "admin.conf").read_text())
    certs.renew("all")
    out = capsys.readouterr().out
    assert "Done renewing certificates. You must restart the kube-apiserver" in out
    new_crt = (p / "apiserver.crt").read_bytes()
    assert new_crt != old_crt and (p / "apiserver.key").read_bytes() != old_key
    assert certs._details(new_crt) == certs._details(old_crt)
    new_admin = yaml.safe_load((control_plane / "admin.conf").read_text())
    data = lambda c: c["users"][0]["user"]["client-certificate-data"]  # noqa: E731
    assert data(new_admin) != data(old_admin)
    assert certs._details(base64.b64decode(data(new_admin)))[0] == (
        "/O=kubeadm:cluster-admins/CN=kubernetes-admin"
    )
    assert new_admin["clusters"] == old_admin["clusters"]
    with pytest.raises(certs.Fail, match='unknown command "apiserver-etcd'):
        certs.renew("apiserver-etcd-clientx")


def test_check_expiration_needs_admin_conf(control_plane: Path) -> None:
    (control_plane / "admin.conf").unlink()
    with pytest.raises(certs.Fail, match=r"admin\.conf: no such file"):
        certs.check_expiration()


@pytest.mark.parametrize(("residual", "renew"), [("364d", False), ("30d", False), ("29d", True),
                                                  ("23h", True), ("<invalid>", True)])  # fmt: skip
def test_renewal_only_under_the_threshold(residual: str, renew: bool) -> None:
    rows = [
        ("CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED"),
        ("admin.conf", "Nov 30, 2027 10:00 UTC", "364d", "ca", "no"),
        ("apiserver", "Dec 20, 2026 10:00 UTC", residual, "ca", "no"),
        (),
        ("CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED"),
        ("ca", "Nov 28, 2036 10:00 UTC", "9y", "no"),
    ]
    out = "\n".join("   ".join(r) for r in rows) + "\n"
    change = CertsFresh(None, "k8scontrol01", 30).check(Host("k8scontrol01"), Fact(out, 0))  # type: ignore[arg-type]
    assert (change is not None) is renew
    if change:
        assert "apiserver expires Dec 20, 2026" in change.summary


def test_unparsable_residual_is_refused() -> None:
    with pytest.raises(ValueError):
        certexpiry.residual_days("soon")
