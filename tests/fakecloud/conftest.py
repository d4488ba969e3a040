"""Fixtures: an in-process fakecloud on 127.0.0.1 (port 0) with a seeded state file.

Every response the real `hcloud` client or the raw helper receives from a public endpoint is
validated against the OpenAPI response schema on the spot, so each test is a schema test too.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hcloud
import pytest
import requests

from lab.fakecloud.model import OnChange
from lab.fakecloud.server import FakeCloud, Listener, Running, start
from lab.fakecloud.state import SeedFloatingIP, SeedServer, seed
from tests.fakecloud import schema

DEFAULT_SERVERS = [
    SeedServer("k8scontrol01", "203.0.113.2", {"role": "control-plane", "cluster": "skgm"}),
    SeedServer("k8slb01", "203.0.113.5", {"role": "lb", "cluster": "skgm"}),
    SeedServer("k8slb02", "203.0.113.6", {"role": "lb", "cluster": "skgm"}),
    SeedServer("k8node01", "203.0.113.7", {"role": "worker"}),
]
DEFAULT_FIPS = [SeedFloatingIP("k8s-api", "203.0.113.100")]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Env:
    """One running fakecloud plus helpers to talk to it."""

    state_path: Path
    token: str
    cloud: FakeCloud
    running: Running
    options: dict[str, Any]
    checked: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.running.addresses[0]
        return f"http://{host}:{port}"

    def client(self, token: str | None = None) -> hcloud.Client:
        """The real hcloud client, polling fast, with schema checks on every response."""
        cl = hcloud.Client(
            token or self.token, api_endpoint=f"{self.url}/v1", timeout=5, poll_interval=0.02
        )
        cl._client._session.hooks["response"].append(self._check_response)
        return cl

    def _check_response(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        path = urlsplit(resp.url).path
        if resp.content:
            schema.validate(path, resp.request.method or "GET", resp.status_code, resp.json())
            self.checked.append((resp.request.method or "GET", path, resp.status_code))

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "default",
        raw: bytes | None = None,
        timeout: float = 5,
    ) -> Reply:
        """One raw HTTP call; public answers are schema-checked."""
        host, port = self.running.addresses[0]
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            reply = Reply(resp.status, dict(resp.getheaders()), json.loads(payload or b"null"))
        finally:
            conn.close()
        if not path.startswith("/_lab/"):
            try:
                schema.validate(path, method, reply.status, reply.body)
            except LookupError:
                assert reply.status >= 400, f"{method} {path} answered {reply.status}"
                schema.validate_error(reply.body)
            self.checked.append((method, path, reply.status))
        return reply

    def restart(self) -> None:
        """Stop and start again on the same state file (a new FakeCloud, as after a reboot)."""
        self.running.stop()
        self.cloud = FakeCloud(self.state_path, self.token, **self.options)
        self.running = start(self.cloud, [Listener("127.0.0.1", 0, admin=True)])


MakeEnv = Callable[..., Env]


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[MakeEnv]:
    envs: list[Env] = []

    def make(
        *,
        servers: list[SeedServer] | None = None,
        floating_ips: list[SeedFloatingIP] | None = None,
        action_seconds: float = 0.05,
        on_change: OnChange | None = None,
        rate_limit: int = 3600,
        rate_refill_per_s: float = 1.0,
    ) -> Env:
        state_path = tmp_path / f"state-{len(envs)}.json"
        seed(
            state_path,
            servers=DEFAULT_SERVERS if servers is None else servers,
            floating_ips=DEFAULT_FIPS if floating_ips is None else floating_ips,
        )
        token = "test-" + secrets.token_hex(16)
        options: dict[str, Any] = {
            "action_seconds": action_seconds,
            "on_change": on_change,
            "rate_limit": rate_limit,
            "rate_refill_per_s": rate_refill_per_s,
        }
        cloud = FakeCloud(state_path, token, **options)
        running = start(cloud, [Listener("127.0.0.1", 0, admin=True)])
        env = Env(state_path, token, cloud, running, options)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.running.stop()


@pytest.fixture
def env(make_env: MakeEnv) -> Env:
    return make_env()


def write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return path
