"""LAB STAND-IN for a kernel update: a package whose postinst asks for a reboot, as Debian's
linux-image packages do (through /etc/kernel/postinst.d/ → /var/run/reboot-required and
/var/run/reboot-required.pkgs). The lab cannot install a kernel; this is the part the runbook
sees: an upgrade that leaves a reboot behind.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

NAME = "rblab-kernel-update"

POSTINST = f"""#!/bin/sh
set -e
# configure with an old version: an upgrade (a first install needs no reboot here)
if [ "$1" = configure ] && [ -n "$2" ]; then
    touch /var/run/reboot-required
    grep -qx {NAME} /var/run/reboot-required.pkgs 2>/dev/null \\
        || echo {NAME} >> /var/run/reboot-required.pkgs
fi
"""


def kernel_package(dest: Path, version: str) -> Path:
    """Build `rblab-kernel-update_VERSION_all.deb` into `dest` (replaced if it exists)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / NAME
        debian = root / "DEBIAN"
        debian.mkdir(parents=True)
        (debian / "control").write_text(
            f"Package: {NAME}\nVersion: {version}\nArchitecture: all\n"
            "Maintainer: rblab <lab@invalid>\nSection: kernel\nPriority: optional\n"
            "Description: LAB STAND-IN for a kernel update: its postinst requires a reboot\n"
            " Built by lab/standins/kernel.py for the runbook's namespace lab.\n"
        )
        postinst = debian / "postinst"
        postinst.write_text(POSTINST)
        postinst.chmod(0o755)
        doc = root / "usr/share/doc" / NAME
        doc.mkdir(parents=True)
        (doc / "version").write_text(version + "\n")
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / f"{NAME}_{version}_all.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
            check=True,
            capture_output=True,
        )
        return out
