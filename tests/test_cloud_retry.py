"""Retries of the Hetzner API: only what hcloud does not retry itself, with a progress line and
a deadline that spans calls (fake clock: no test sleeps)."""

from __future__ import annotations

import io
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hcloud._client
import pytest
import requests
import yaml
from hcloud import APIException, Client

from lab.fakecloud.server import FakeCloud, Listener, start
from lab.fakecloud.state import seed
from runbook.cloud.api import CloudTarget, CloudUnavailable, Retrier
from runbook.core.console import Masker, Ui, make_console
from tests.conftest import FakeClock
from tests.test_cli import REPO, inv


def failing(errors: list[BaseException]) -> tuple[Callable[[], str], list[int]]:
    """A call that raises the given errors in turn, then answers "ok"; counts its calls."""
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    return fn, calls


def api_error(code: str | int) -> APIException:
    return APIException(code=code, message="m", details=None)


def make(deadline: float = 60) -> tuple[Retrier, FakeClock, list[str]]:
    clock, said = FakeClock(), []
    return Retrier(deadline, clock=clock.monotonic, sleep=clock.sleep, say=said.append), clock, said


@pytest.mark.parametrize(
    "error",
    [api_error("locked"), api_error("unavailable"), api_error(503), requests.ConnectionError()],
    ids=["locked", "unavailable", "503", "refused"],
)
def test_retried_with_one_progress_line(error: BaseException) -> None:
    r, clock, said = make()
    fn, calls = failing([error, error, error])
    assert r.call(fn) == "ok" and calls[0] == 4 and len(clock.slept) == 3
    assert len(said) == 1 and re.fullmatch(
        r"hcloud: API not answering \(.+\), retrying until \d\d:\d\d:\d\d", said[0]
    ), said


@pytest.mark.parametrize(
    "error",
    [
        api_error("rate_limit_exceeded"),
        api_error("conflict"),
        api_error("timeout"),
        api_error("server_error"),
        api_error("not_found"),
        requests.ReadTimeout(),
        requests.ConnectTimeout(),
    ],
    ids=["429", "conflict", "timeout", "500", "404", "read-timeout", "connect-timeout"],
)
def test_what_hcloud_retries_or_what_is_final_is_not_retried_again(error: BaseException) -> None:
    r, clock, said = make()
    fn, calls = failing([error])
    with pytest.raises(type(error)):
        r.call(fn)
    assert calls[0] == 1 and clock.slept == [] and said == []


def test_the_deadline_ends_the_retries_and_spans_later_calls() -> None:
    r, clock, said = make(deadline=30)
    fn, calls = failing([requests.ConnectionError()] * 1000)
    with pytest.raises(CloudUnavailable, match=r"within hcloud.retry_deadline \(30 s\)"):
        r.call(fn)
    eps = 1e-6  # float sums of the backoff sleeps
    assert sum(clock.slept) <= 30 + eps and clock.now - 1000 <= 30 + eps
    n = calls[0]
    with pytest.raises(CloudUnavailable):  # still down: one try, no new wait
        r.call(fn)
    assert calls[0] == n + 1 and sum(clock.slept) <= 30 + eps and len(said) == 1
    ok, _ = failing([])
    assert r.call(ok) == "ok"  # the API is back: the next outage gets a full deadline again
    fn2, _ = failing([requests.ConnectionError()] * 2)
    assert r.call(fn2) == "ok" and len(said) == 2


# --- against the simulated API over real HTTP, with the real hcloud client ---


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[tuple[FakeCloud, str]]:
    state = tmp_path / "cloud.json"
    seed(state, servers=[], floating_ips=[])
    fc = FakeCloud(state, "tok-0123456789abcdef", action_seconds=0.02)
    running = start(fc, [Listener("127.0.0.1", 0, admin=True)])
    host, port = running.addresses[0]
    yield fc, f"http://{host}:{port}/v1"
    running.stop()


class _NoSleepTime:
    """hcloud's own backoff without waiting (only hcloud's module sees this)."""

    def __getattr__(self, name: str) -> Any:
        import time

        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        return None


def test_a_steady_429_is_retried_by_hcloud_only(
    fake_api: tuple[FakeCloud, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fc, url = fake_api
    monkeypatch.setattr(hcloud._client, "time", _NoSleepTime())
    fc.faults.configure(fail_next=1000, code="rate_limit_exceeded")
    clock = FakeClock()
    target = CloudTarget(
        Client(token="tok-0123456789abcdef", api_endpoint=url, timeout=5),
        clock=clock.monotonic,
        sleep=clock.sleep,
    )
    with pytest.raises(APIException):
        target.network("k8s")
    assert len(fc.calls.dump()) == 6  # hcloud: 1 + 5 retries; nothing on top
    assert clock.slept == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_down_shows_progress_and_gives_up_at_the_deadline() -> None:
    out = io.StringIO()
    masker = Masker()
    ui = Ui(make_console(masker, file=out, width=200), masker)
    clock = FakeClock()
    target = CloudTarget(
        Client(token="t", api_endpoint=f"http://127.0.0.1:{closed_port()}/v1", timeout=5),
        ui=ui,
        retry_seconds=45,
        clock=clock.monotonic,
        sleep=clock.sleep,
    )
    with pytest.raises(CloudUnavailable, match="connection failed"):
        target.server("k8slb01")
    assert "API not answering (connection failed), retrying until" in out.getvalue()
    assert 40 <= clock.now - 1000 <= 45 + 1e-6


def test_inv_network_dry_run_with_the_api_down_says_so_and_stops(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    data["hcloud"].update(endpoint=f"http://127.0.0.1:{closed_port()}/v1", retry_deadline=2)
    p = tmp_path / "hosts.yaml"
    p.write_text(yaml.safe_dump(data))
    r = inv("network", "--dry-run", inventory=p, env={"HCLOUD_TOKEN": "tok-abc"})
    text = (r.stdout + r.stderr).replace("\n", " ")
    assert r.returncode == 1, text
    assert "API not answering (connection failed), retrying until" in text
    assert "did not answer within hcloud.retry_deadline (2 s)" in text
    assert "Traceback" not in text


def test_a_call_hcloud_keeps_retrying_is_announced_while_it_runs(
    fake_api: tuple[FakeCloud, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hanging API: hcloud retries its read timeouts itself (silently); the runbook says so."""
    fc, url = fake_api
    monkeypatch.setattr(hcloud._client, "time", _NoSleepTime())
    fc.faults.configure(outage=60, outage_mode="hang")
    said: list[str] = []
    retrier = Retrier(60, say=said.append, slow_after=0.3)
    client = Client(token="tok-0123456789abcdef", api_endpoint=url, timeout=0.2)
    with pytest.raises(requests.Timeout):  # hcloud's 6 tries of 0.2 s, then the step fails
        retrier.call(lambda: client.networks.get_by_name("k8s"))
    assert said == [
        "hcloud: no answer from the API for 0.3 s, still waiting "
        "(the hcloud client retries timeouts and rate limits itself)"
    ]


def test_no_retry_starts_after_an_interrupt() -> None:
    import signal

    from runbook.core.interrupt import Interrupted, StopFlag

    stop, clock = StopFlag(), FakeClock()

    def sleep(seconds: float) -> None:  # Ctrl-C arrives during the first pause
        clock.sleep(seconds)
        stop.request(signal.SIGINT)

    r = Retrier(60, clock=clock.monotonic, sleep=sleep, stop=stop)
    fn, calls = failing([requests.ConnectionError()] * 100)
    with pytest.raises(Interrupted):
        r.call(fn)
    assert calls[0] == 1 and sum(clock.slept) <= 0.2
