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
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

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
def ansible_pass(lab: Lab, out: Path, secret: tuple[str, str], home: Path) -> dict[str, Any]:
    """One `ansible-playbook` run; a fresh SSH ControlPath dir, so each run connects cold like
    the runbook's (ControlPersist would otherwise reuse the previous run's connections)."""
    token, authkey = secret
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
    if token in text or authkey in text:
        raise SystemExit("a secret (API token or Heartbeat key) appeared in Ansible's output")
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
    """Per LB: sha256/mode/owner of each rendered file, of the sysctl.d file and /etc/hosts
    by their fields; services; ip_nonlocal_bind (contents never read into the result)."""
    files = " ".join(paths)
    script = (
        f"for f in {files}; do "
        'printf "%s %s %s\\n" "$f" "$(sha256sum < "$f" | cut -d" " -f1)" '
        '"$(stat -c "%a %U:%G" "$f")"; done; '
        f"for s in {' '.join(SERVICES)}; do "
        'echo "service $s $(systemctl is-enabled $s 2>/dev/null) '
        '$(systemctl is-active $s 2>/dev/null)"; done; '
        'echo "sysctl $(sysctl -n net.ipv4.ip_nonlocal_bind)"; '
        # compared by their fields (blanks squeezed): the tools write the sysctl.d line as
        # "k = v" / "k=v"; the runbook keeps a matching /etc/hosts line whose fields are right
        # (its spacing means nothing), Ansible's lineinfile rewrites it with its own spacing
        f"for f in {SYSCTL_FILE} /etc/hosts; do "
        'printf "%s(fields) %s %s\\n" "$f" '
        '"$(sed -e "s/=/ = /" "$f" | tr -s " \\t" " " | sha256sum | cut -d" " -f1)" '
        '"$(stat -c "%a %U:%G" "$f")"; done'
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
def compare(lab: Lab, tools: set[str]) -> dict[str, Any]:
    os.environ.update(RBLAB_STATE=str(lab.state), RBLAB_TOPOLOGY=str(lab.topology))
    version = ensure_ansible() if "ansible" in tools else ""
    lab_inv = load_inventory(lab.topology)
    lbs = [h.name for h in lab_inv.hosts_with_role("lb")]
    paths = ansible_files.compared_paths(lab_inv)
    res: dict[str, Any] = {"ansible": version, "lab_up_s": []}
    authkey = ""

    if "runbook" in tools:
        console.rule("runbook: fresh LB pair")
        res["lab_up_s"].append(round(lab.fresh(), 2))
        first = runbook_pass(lab, lbs)
        console.print(f"runbook first run {first['seconds']:.1f} s; no-op run …")
        noop = runbook_pass(lab, lbs)
        res["runbook"] = {"first": first, "noop": noop, "end_state": end_state(lbs, paths)}
        res["runbook"]["lb_status_exit"] = lb_status_exit(lab)
        authkey = runbook_authkey(lbs[0])

    if "ansible" in tools:
        console.rule("ansible: fresh LB pair")
        res["lab_up_s"].append(round(lab.fresh(), 2))
        inv = load_inventory(lab.inventory)  # the state dir's copy (its key, known_hosts)
        token = (lab.state / "hcloud-token").read_text().strip()
        home = lab.state / "ansible"
        home.mkdir(mode=0o700, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="rendered-", dir=home) as tmp:
            out = Path(tmp)
            authkey = authkey or secrets.token_hex(32)
            ansible_files.render(
                inv,
                out,
                authkey=authkey,
                token=token,
                boot_time_command=ansible_files.LAB_BOOT_TIME_COMMAND,
            )
            first = ansible_pass(lab, out, (token, authkey), home)
            console.print(f"ansible first run {first['seconds']:.1f} s; no-op run …")
            noop = ansible_pass(lab, out, (token, authkey), home)
        res["ansible_playbook"] = {"first": first, "noop": noop, "end_state": end_state(lbs, paths)}
        res["ansible_playbook"]["lb_status_exit"] = lb_status_exit(lab)

    if "runbook" in res and "ansible_playbook" in res:
        res["differences"] = differences(
            res["runbook"]["end_state"], res["ansible_playbook"]["end_state"]
        )
    return res


def report(res: dict[str, Any]) -> bool:
    labels = {
        "runbook": "runbook: inv prepare + network (--host LBs), lb.setup",
        "ansible_playbook": "ansible-playbook bench/ansible/lb-tier.yml "
        + escape(f"({res['ansible']})"),
    }
    done = {k: res[k] for k in labels if k in res}
    table(
        "LB tier on a fresh pair (2 LBs): wall seconds and changed counts",
        ["tool", "first run (s)", "changed", "no-op run (s)", "no-op changed", "lb.status exit"],
        [
            (
                labels[k],
                r["first"]["seconds"],
                r["first"]["changed"],
                r["noop"]["seconds"],
                r["noop"]["changed"],
                r["lb_status_exit"],
            )
            for k, r in done.items()
        ],
    )
    console.print(
        "changed counts: the runbook's are changed targets (step x host, cloud included); "
        "Ansible's are changed tasks summed over hosts (localhost = cloud)"
    )
    an = done.get("ansible_playbook")
    if an and an["noop"]["changed"]:
        console.print(f"ansible no-op: changed on {an['noop']['changed_tasks']}")
    diffs = res.get("differences", [])
    for d in diffs:
        console.print(f"[yellow]end state differs:[/yellow] {d}")
    ok_noop = all(r["noop"]["changed"] == 0 for r in done.values())
    ok_status = all(r["lb_status_exit"] == 0 for r in done.values())
    same = "differences" in res and not diffs
    console.print(
        f"no-op runs change nothing: {verdict(ok_noop)}; pair healthy after each "
        f"(lb.status exit 0): {verdict(ok_status)}; same end state: "
        + (verdict(same) if "differences" in res else "not compared (one tool only)")
    )
    return ok_noop and ok_status and (same or "differences" not in res)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("RBLAB_STATE", "/var/lib/rblab-bench")),
        help="lab state dir (default: $RBLAB_STATE, as /work/labrun sets it, else "
        "/var/lib/rblab-bench)",
    )
    ap.add_argument(
        "--only",
        choices=("runbook", "ansible"),
        help="run one tool only (a quick check; the results file gets a suffix)",
    )
    args = ap.parse_args()
    lab = Lab(args.state, REPO / "lab" / "hosts.yaml")
    tools = {args.only} if args.only else {"runbook", "ansible"}
    with lab_session(lab):
        res = compare(lab, tools)
    ok = report(res)
    save("ansible-compare" + (f"-{args.only}-only" if args.only else ""), res)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
