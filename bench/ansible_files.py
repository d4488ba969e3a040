"""What the Ansible comparison playbook (`bench/ansible/lb-tier.yml`) copies: the LB tier's files,
rendered ONCE by the runbook's own renderers (`runbook.render.lbfiles`), so the side-by-side
measures the two tools, not two configurations; plus the playbook's variables and an Ansible
inventory, both generated from the runbook's inventory.

Layout of the output directory (mode 0700; the secret files 0600):

    files/<host>/<absolute path>   every rendered file of that LB (authkeys, env file included)
    manifest.json                  path, mode, secret flag per file (the same for every LB)
    vars.yml                       the playbook's variables (addresses, names; no secret)
    inventory.yml                  the LBs with the runbook's SSH settings, and localhost

Secrets are parameters here, as in the runbook: the Heartbeat key and the API token go into the
0600 files only; neither is in vars.yml, the inventory, argv or the playbook's output (the
playbook copies those two files with `no_log`; its cloud tasks read HCLOUD_TOKEN from the
environment).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from runbook.inventory import API_PORT, Inventory
from runbook.render import lbfiles
from runbook.render.lbfiles import RenderedFile
from runbook.steps.lb import SYSCTL_FILE
from runbook.steps.prepare import LB_PACKAGES

PLAYBOOK = Path(__file__).resolve().parent / "ansible" / "lb-tier.yml"
ANSIBLE_CFG = PLAYBOOK.parent / "ansible.cfg"
# the lab's hosts share the machine's kernel: their boot_id never changes, their PID 1's start
# time (field 22 of /proc/1/stat) does; Ansible's reboot module compares this before and after
LAB_BOOT_TIME_COMMAND = "cut -d' ' -f22 /proc/1/stat"


def lb_files(inv: Inventory, host: str, *, authkey: str, token: str) -> list[RenderedFile]:
    """Every file the runbook's heartbeat and haproxy steps install on `host`, in their order."""
    return [
        *lbfiles.haproxy_files(inv, host),
        *lbfiles.heartbeat_files(inv, host, authkey=authkey),
        *lbfiles.failover_files(inv, host, token=token),
        *lbfiles.watchdog_files(inv, host),
        *lbfiles.logrotate_files(inv, host),
    ]


def etc_hosts_lines(inv: Inventory) -> list[dict[str, str]]:
    """The prepare step's /etc/hosts lines (`runbook.steps.prepare.hosts_lines`), as data."""
    out = []
    for h in inv.hosts.values():
        fqdn = "." in h.address and not h.address[0].isdigit()
        names = [h.address, h.name] if fqdn else [h.name]
        out.append({"ip": str(h.private_ip), "names": " ".join(dict.fromkeys(names))})
    if inv.kubernetes.api_dns_name:
        out.append(
            {
                "ip": str(inv.load_balancer.vip),
                "names": inv.kubernetes.api_dns_name.lower().rstrip("."),
            }
        )
    return out


def playbook_vars(inv: Inventory, out: Path) -> dict[str, Any]:
    """The playbook's variables: everything it needs that is not a rendered file."""
    lb = inv.load_balancer
    net = inv.hcloud.network
    return {
        "rendered_dir": str(out / "files"),
        "etc_hosts": etc_hosts_lines(inv),
        "lb_packages": list(LB_PACKAGES),
        "sysctl_file": SYSCTL_FILE,
        "hcloud_endpoint": inv.hcloud.endpoint,
        "network": {
            "name": net.name,
            "ip_range": str(net.ip_range),
            "subnet": str(net.subnet),
            "zone": net.zone,
        },
        "lb_private_ip": {h.name: str(h.private_ip) for h in lbfiles.lb_hosts(inv)},
        "lb_primary": lb.primary,
        "lb_interface": lb.interface,
        "vip": str(lb.vip),
        "api_port": API_PORT,
        # Heartbeat acquires the group `initdead` after it starts: a check before then sees
        # "nobody owns it" on both nodes
        "heartbeat_settle_s": lb.heartbeat.effective_initdead + lb.heartbeat.deadtime,
        # the rotation rule exists only with Heartbeat's own log file (lbfiles.logrotate_files)
        "heartbeat_log_rotated": bool(lb.heartbeat.logfile),
        # the heartbeat step's one line in resource-agents' shellfuncs
        "shellfuncs": {
            "path": lbfiles.SHELLFUNCS_PATH,
            "regexp": lbfiles.CLUSTERMSG_MATCH,
            "line": lbfiles.clustermsg_override(),
        },
        "floating_ip": {
            "name": lb.floating_ip.name,
            "address": str(lb.floating_ip.address),
            "dns_ptr": lb.floating_ip.dns_ptr or "",
        },
    }


def ansible_inventory(inv: Inventory, *, boot_time_command: str | None = None) -> dict[str, Any]:
    """The LBs reached the way the runbook reaches them (`ssh:` of the inventory); localhost
    runs the cloud tasks with the controller's Python (the hcloud modules run there)."""
    ssh = inv.ssh
    opts = [f"-o UserKnownHostsFile={inv.known_hosts_path}", "-o StrictHostKeyChecking=yes"]
    if ssh.proxy_command:
        opts.append(f"-o ProxyCommand='{ssh.proxy_command}'")
    if ssh.connect_timeout:
        opts.append(f"-o ConnectTimeout={ssh.connect_timeout:g}")
    lb_vars: dict[str, Any] = {
        "ansible_user": ssh.user,
        "ansible_port": ssh.port,
        "ansible_ssh_common_args": " ".join(opts),
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    if inv.identity_path is not None:
        lb_vars["ansible_ssh_private_key_file"] = str(inv.identity_path)
    if boot_time_command:
        lb_vars["reboot_boot_time_command"] = boot_time_command
    return {
        "all": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                }
            },
            "children": {
                "lb": {
                    "hosts": {h.name: {"ansible_host": h.address} for h in lbfiles.lb_hosts(inv)},
                    "vars": lb_vars,
                }
            },
        }
    }


def _check_same_layout(per_host: dict[str, list[RenderedFile]]) -> list[dict[str, Any]]:
    layouts = {h: [(f.path, f.mode, f.secret) for f in files] for h, files in per_host.items()}
    first = next(iter(layouts.values()))
    if any(v != first for v in layouts.values()):
        raise ValueError(f"the LBs' file lists differ: {layouts}")
    return [{"path": p, "mode": f"{m:04o}", "secret": s} for p, m, s in first]


def render(
    inv: Inventory,
    out: Path,
    *,
    authkey: str,
    token: str,
    boot_time_command: str | None = None,
) -> Path:
    """Write files/, manifest.json, vars.yml and inventory.yml into `out`; returns vars.yml."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    per_host = {
        h.name: lb_files(inv, h.name, authkey=authkey, token=token) for h in lbfiles.lb_hosts(inv)
    }
    for host, files in per_host.items():
        for f in files:
            dest = out / "files" / host / f.path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.touch(mode=0o600)
            dest.chmod(0o600 if f.secret else f.mode)
            dest.write_text(f.content)
    (out / "manifest.json").write_text(json.dumps(_check_same_layout(per_host), indent=1))
    varfile = out / "vars.yml"
    varfile.write_text(yaml.safe_dump(playbook_vars(inv, out), sort_keys=False))
    (out / "inventory.yml").write_text(
        yaml.safe_dump(ansible_inventory(inv, boot_time_command=boot_time_command))
    )
    return varfile


def compared_paths(inv: Inventory) -> list[str]:
    """The files whose sha256 must be the same after either tool (the rendered ones)."""
    first = lbfiles.lb_hosts(inv)[0].name
    return [f.path for f in lb_files(inv, first, authkey="x", token="x")]


def task_names(playbook: Sequence[dict[str, Any]]) -> list[str]:
    """Every play's and task's (and handler's) name, in order: the unit test's structural check."""
    names = []
    for play in playbook:
        names.append(str(play.get("name", "")))
        for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
            for task in play.get(section) or []:
                names.append(str(task.get("name", "")))
                for sub in task.get("block") or []:
                    names.append(str(sub.get("name", "")))
    return names
