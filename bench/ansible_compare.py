"""The LB tier side by side: the runbook against an equivalent Ansible playbook, same two LBs.

On a fresh lab: the runbook's first run of the load-balancer tier (`inv prepare` and `inv network`
limited to the two LBs, then `inv lb.setup`, each with --yes) and its no-op re-run; then a fresh
lab again and `bench/ansible/lb-tier.yml`'s first run and no-op run. Reports wall times and
changed counts, checks that the no-op runs change nothing, that both tools leave the same files
(sha256, mode, owner of every rendered file, /etc/hosts), the same services enabled and active,
ip_nonlocal_bind set, and that `inv lb.status` exits 0 after each.

The playbook's files are rendered once by the runbook's renderers (bench/ansible_files.py), with
the Heartbeat key the runbook generated on its run, so every file is byte-identical when both
tools are right. Ansible (the `ansible` package: ansible-core and the hetzner.hcloud/ansible.posix
collections) is a benchmark tool only, never a product dependency: it is installed into this venv
on demand (`pip install '.[bench]'` does the same).

    /work/labrun .venv/bin/python -m bench.ansible_compare [--state DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import ansible_files
from bench.common import REPO, Lab, Run, console, lab_session, run_inv, save, table, verdict
from lab import netns, scenarios
from runbook.inventory import load_inventory
from runbook.steps.lb import SYSCTL_FILE

ANSIBLE_REQUIREMENT = "ansible>=11,<12"
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN / "ansible-playbook"
SERVICES = ("haproxy", "heartbeat", "hcloud-reassert.timer", "haproxy-watchdog")
_AUTHKEY = re.compile(r"^\s*1\s+(?:sha1|md5)\s+(\S+)\s*$", re.M)
_ANSIBLE_RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


def ensure_ansible() -> str:
    """ansible-playbook in this venv (pip-installed on first use); returns its version line."""
    if not ANSIBLE_PLAYBOOK.exists():
        console.print(f"installing {ANSIBLE_REQUIREMENT} into {BIN.parent} (bench only) …")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", ANSIBLE_REQUIREMENT], check=True
        )
    out = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "--version"], capture_output=True, text=True, check=True
    ).stdout
    return out.splitlines()[0]


# -- the runbook -------------------------------------------------------------------------------
def runbook_runs(lab: Lab, lbs: list[str]) -> list[tuple[str, ...]]:
    only = [a for h in lbs for a in ("--host", h)]
    return [("prepare", *only, "--yes"), ("network", *only, "--yes"), ("lb.setup", "--yes")]


def runbook_pass(lab: Lab, lbs: list[str]) -> dict[str, Any]:
    runs: list[Run] = [run_inv(lab, *args) for args in runbook_runs(lab, lbs)]
    return {
        "seconds": round(sum(r.seconds for r in runs), 2),
        "changed": sum(r.recap.get("changed", 0) for r in runs),
        "failed": sum(r.recap.get("failed", 0) for r in runs),
        "commands": [
            {"args": " ".join(r.args), "seconds": round(r.seconds, 2), "recap": r.recap}
            for r in runs
        ],
    }


def runbook_authkey(lb: str) -> str:
    """The pair's Heartbeat key as the runbook left it (read on the host; never printed)."""
    raw = netns.host_exec(lb, ["cat", "/etc/ha.d/authkeys"]).stdout
    m = _AUTHKEY.search(raw)
    if not m:
        raise SystemExit(f"{lb}: no key in /etc/ha.d/authkeys after the runbook's run")
    return m.group(1)


# -- Ansible -----------------------------------------------------------------------------------
def ansible_pass(lab: Lab, out: Path, token: str, home: Path) -> dict[str, Any]:
    """One `ansible-playbook` run; a fresh SSH ControlPath dir, so each run connects cold like
    the runbook's (ControlPersist would otherwise reuse the previous run's connections)."""
    cp = Path(tempfile.mkdtemp(prefix="cp-", dir=home))
    env = lab.env | {
        "ANSIBLE_CONFIG": str(ansible_files.ANSIBLE_CFG),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp),
        "ANSIBLE_NOCOLOR": "1",
        "HCLOUD_TOKEN": token,
    }
    argv = [
        str(ANSIBLE_PLAYBOOK),
        "-i",
        str(out / "inventory.yml"),
        "-e",
        f"@{out / 'vars.yml'}",
        str(ansible_files.PLAYBOOK),
    ]
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - t0
    shutil.rmtree(cp, ignore_errors=True)
    text = r.stdout + r.stderr
    if token in text:
        raise SystemExit("the API token appeared in ansible-playbook's output")
    hosts = {
        m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
        for m in _ANSIBLE_RECAP.findall(text)
    }
    log = home / f"ansible-run-{int(time.time())}.log"
    log.write_text(text)
    if r.returncode != 0 or not hosts:
        raise SystemExit(f"ansible-playbook exited {r.returncode} (log {log}):\n{text[-4000:]}")
    return {
        "seconds": round(seconds, 2),
        "changed": sum(h["changed"] for h in hosts.values()),
        "failed": sum(h["failed"] + h["unreachable"] for h in hosts.values()),
        "recap": hosts,
        "changed_tasks": re.findall(r"^changed: \[(\S+?)\]", text, re.M),
        "log": str(log),
    }


# -- the end state -----------------------------------------------------------------------------
def end_state(lbs: list[str], paths: list[str]) -> dict[str, Any]:
    """Per LB: sha256/mode/owner of each file, services, ip_nonlocal_bind (contents never read
    into the result)."""
    files = " ".join([*paths, "/etc/hosts"])
    script = (
        f"for f in {files}; do "
        'printf "%s %s %s\\n" "$f" "$(sha256sum < "$f" | cut -d" " -f1)" '
        '"$(stat -c "%a %U:%G" "$f")"; done; '
        f"for s in {' '.join(SERVICES)}; do "
        'echo "service $s $(systemctl is-enabled $s 2>/dev/null) '
        '$(systemctl is-active $s 2>/dev/null)"; done; '
        'echo "sysctl $(sysctl -n net.ipv4.ip_nonlocal_bind)"; '
        # the two tools format the sysctl.d line differently ("k = v" / "k=v"): its content
        # compared with the blanks removed
        f'echo "{SYSCTL_FILE}(no-blanks) $(tr -d " " < {SYSCTL_FILE} | sha256sum | cut -d" " -f1) '
        f'$(stat -c "%a %U:%G" {SYSCTL_FILE})"'
    )
    state: dict[str, Any] = {}
    for lb in lbs:
        lines = netns.host_exec(lb, ["sh", "-c", script]).stdout.splitlines()
        st: dict[str, Any] = {"files": {}, "services": {}}
        for line in lines:
            parts = line.split()
            if parts[0] == "service":
                st["services"][parts[1]] = " ".join(parts[2:])
            elif parts[0] == "sysctl":
                st["ip_nonlocal_bind"] = parts[1]
            else:
                st["files"][parts[0]] = {"sha256": parts[1], "mode_owner": " ".join(parts[2:])}
        state[lb] = st
    return state


def lb_status_exit(lab: Lab) -> int:
    inv = scenarios.inv_runner(state=lab.state, extra_env=lab.env)
    return inv("lb.status", check=False, timeout=120).returncode


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two end states (runbook vs Ansible), per LB and item."""
    out = []
    for lb in a:
        for section in ("files", "services"):
            for key in sorted(set(a[lb][section]) | set(b[lb][section])):
                va, vb = a[lb][section].get(key), b[lb][section].get(key)
                if va != vb:
                    out.append(f"{lb} {key}: runbook {va} / ansible {vb}")
        if a[lb].get("ip_nonlocal_bind") != b[lb].get("ip_nonlocal_bind"):
            out.append(f"{lb} ip_nonlocal_bind: {a[lb]['ip_nonlocal_bind']} / {b[lb]}")
    return out


# -- the benchmark -----------------------------------------------------------------------------
def compare(lab: Lab) -> dict[str, Any]:
    os.environ.update(RBLAB_STATE=str(lab.state), RBLAB_TOPOLOGY=str(lab.topology))
    version = ensure_ansible()
    lab_inv = load_inventory(lab.topology)
    lbs = [h.name for h in lab_inv.hosts_with_role("lb")]
    paths = ansible_files.compared_paths(lab_inv)

    console.rule("runbook: fresh LB pair")
    up1 = lab.fresh()
    inv = load_inventory(lab.inventory)  # the state dir's copy (its key and known_hosts paths)
    rb_first = runbook_pass(lab, lbs)
    console.print(f"runbook first run {rb_first['seconds']:.1f} s; no-op run …")
    rb_noop = runbook_pass(lab, lbs)
    rb_state = end_state(lbs, paths)
    rb_status = lb_status_exit(lab)
    authkey = runbook_authkey(lbs[0])

    console.rule("ansible: fresh LB pair")
    up2 = lab.fresh()
    token = (lab.state / "hcloud-token").read_text().strip()
    home = lab.state / "ansible"
    home.mkdir(mode=0o700, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rendered-", dir=home) as tmp:
        out = Path(tmp)
        ansible_files.render(
            inv,
            out,
            authkey=authkey,
            token=token,
            boot_time_command=ansible_files.LAB_BOOT_TIME_COMMAND,
        )
        an_first = ansible_pass(lab, out, token, home)
        console.print(f"ansible first run {an_first['seconds']:.1f} s; no-op run …")
        an_noop = ansible_pass(lab, out, token, home)
    an_state = end_state(lbs, paths)
    an_status = lb_status_exit(lab)
    return {
        "ansible": version,
        "lab_up_s": [round(up1, 2), round(up2, 2)],
        "runbook": {"first": rb_first, "noop": rb_noop, "lb_status_exit": rb_status},
        "ansible_playbook": {"first": an_first, "noop": an_noop, "lb_status_exit": an_status},
        "end_state": {"runbook": rb_state, "ansible": an_state},
        "differences": differences(rb_state, an_state),
    }


def report(res: dict[str, Any]) -> bool:
    rb, an = res["runbook"], res["ansible_playbook"]
    table(
        "LB tier on a fresh pair (2 LBs): wall seconds and changed counts",
        ["tool", "first run (s)", "changed", "no-op run (s)", "no-op changed", "lb.status exit"],
        [
            (
                "runbook (prepare+network --host LBs, lb.setup)",
                rb["first"]["seconds"],
                rb["first"]["changed"],
                rb["noop"]["seconds"],
                rb["noop"]["changed"],
                rb["lb_status_exit"],
            ),
            (
                f"ansible-playbook lb-tier.yml ({res['ansible']})",
                an["first"]["seconds"],
                an["first"]["changed"],
                an["noop"]["seconds"],
                an["noop"]["changed"],
                an["lb_status_exit"],
            ),
        ],
    )
    console.print(
        "changed counts: the runbook's are changed targets (step x host, cloud included); "
        "Ansible's are changed tasks summed over hosts (localhost = cloud)"
    )
    if an["noop"]["changed"]:
        console.print(f"ansible no-op changed tasks on: {an['noop']['changed_tasks']}")
    diffs = res["differences"]
    for d in diffs:
        console.print(f"[yellow]end state differs:[/yellow] {d}")
    ok_noop = rb["noop"]["changed"] == 0 and an["noop"]["changed"] == 0
    ok_status = rb["lb_status_exit"] == 0 and an["lb_status_exit"] == 0
    console.print(
        f"no-op runs change nothing: {verdict(ok_noop)}; pair healthy after each "
        f"(lb.status exit 0): {verdict(ok_status)}; same end state: {verdict(not diffs)}"
    )
    return ok_noop and ok_status and not diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("RBLAB_STATE", "/var/lib/rblab-bench")),
        help="lab state dir (default: $RBLAB_STATE, as /work/labrun sets it, else "
        "/var/lib/rblab-bench)",
    )
    args = ap.parse_args()
    lab = Lab(args.state, REPO / "lab" / "hosts.yaml")
    with lab_session(lab):
        res = compare(lab)
    ok = report(res)
    save("ansible-compare", res)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
