"""A listener inside a network namespace while the process stays in the root namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.fakecloud.server import Listener, start
from tests.fakecloud.conftest import Env

pytestmark = pytest.mark.lab

CLIENT = """
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.stdin.read()})
with urllib.request.urlopen(req, timeout=5) as resp:
    print(json.load(resp)["servers"][0]["name"])
"""


def _own_netns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and ip")
def test_listener_inside_a_namespace(env: Env) -> None:
    name = f"rbft-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    running = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        before = _own_netns()
        running = start(env.cloud, [Listener("127.0.0.1", 0, netns=name)])
        assert _own_netns() == before  # this thread never left the root namespace
        port = running.addresses[0][1]
        url = f"http://127.0.0.1:{port}/v1/servers?name=k8slb01"
        # the token goes through stdin, never argv
        inside = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", CLIENT, url],
            input=env.token,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.strip() == "k8slb01"
        # the same port on the root namespace's loopback is not this listener
        outside = subprocess.run(
            [sys.executable, "-c", CLIENT, url],
            input=env.token,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert outside.returncode != 0
        assert Path(f"/run/netns/{name}").exists()
    finally:
        if running is not None:
            running.stop(close_cloud=False)
        subprocess.run(["ip", "netns", "delete", name], check=False)
    assert not Path(f"/run/netns/{name}").exists()
