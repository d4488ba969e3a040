#!/bin/bash
# Machine-level installs for the namespace lab (run as root, once, BEFORE `inv lab.up`).
#
# Why a separate step: lab hosts overlay the live root filesystem (/usr, /etc, /var/lib ... are the lower
# layers), so a package installed in the root namespace after a host was created shows its files inside the host
# but not in the host's (copied-up) dpkg database. Everything the machine needs is installed here, first.
#
# - openssh-server: the hosts' sshd binary (lower /usr). No sshd may run in the root namespace: policy-rc.d
#   (exit 101) stops the postinst from starting it, and no systemd runs here to start it later.
# - netcat-openbsd: the ProxyCommand connector (`ip netns exec rbl-op nc %h %p`).
# - dpkg-dev: dpkg-scanpackages for the lab's flat apt repository.
# - iproute2, util-linux: ip netns / nsenter / unshare.
# - python3-yaml, openssl: the Kubernetes stand-ins (lab/standins) run with the hosts' python3.
# - nftables: the `nft` tool; the internet namespace rbl-inet enforces the simulated Hetzner Cloud
#   Firewalls with it (lab/sdn.py). Only used inside lab namespaces, never in the root namespace.
# - gcc, libc6-dev: the blind clock (lab/blindclock.c), the stand-in for a hypervisor pause a
#   kvm-clock guest cannot see.
# haproxy and heartbeat are NOT installed here: hosts install them from the lab repo.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-machine.sh: must run as root" >&2; exit 2; }
PKGS=(openssh-server netcat-openbsd dpkg-dev iproute2 util-linux python3 python3-yaml openssl nftables gcc libc6-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
created_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\n# rblab: no service starts from package scripts\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  created_policy=1
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-machine: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-machine: all machine packages present (${PKGS[*]})"
  # the lab repo is built with apt-get --download-only: it needs package lists
  ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || apt-get update -qq
fi
# hosts inherit policy-rc.d from the lower /usr; hostinit writes its own if this one is removed later
[ "$created_policy" = 1 ] && echo "install-machine: created /usr/sbin/policy-rc.d (exit 101)"
# the package may have enabled ssh.service: harmless (no systemd here), but make sure nothing listens
if command -v ss >/dev/null && ss -Hltnp 2>/dev/null | grep -q '"sshd"'; then
  echo "install-machine: WARNING: an sshd listens in the root namespace (not started by this script)" >&2
fi
exit 0
