"""Run-time misbehaviour of the simulated API: rate limiting, injected faults, and the call log.

The runbook and the LBs' failover script must survive what the real API does on a bad day:
429 when the project's bucket is empty, 423 while a resource is busy, 5xx, slow answers and
outages. These classes hold that behaviour; the HTTP layer consults them on every public call.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from lab.fakecloud.errors import STATUS_BY_CODE

OUTAGE_MODES = ("close", "hang", "503")


class TokenBucket:
    """Hetzner's limiter: `capacity` requests, refilled continuously at `refill_per_s`."""

    def __init__(
        self, capacity: int, refill_per_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1 or refill_per_s <= 0:
            raise ValueError("rate limit capacity must be ≥ 1 and refill > 0")
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._clock = clock
        self._tokens = float(capacity)
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.refill_per_s)
        self._stamp = now

    def take(self) -> bool:
        """Consume one token; False when the bucket is empty (the call gets 429)."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def headers(self) -> dict[str, str]:
        """`RateLimit-*` headers; Reset is the UNIX time at which the bucket is full again."""
        with self._lock:
            self._refill()
            missing = self.capacity - self._tokens
            reset = time.time() + missing / self.refill_per_s
            return {
                "RateLimit-Limit": str(self.capacity),
                "RateLimit-Remaining": str(math.floor(self._tokens)),
                "RateLimit-Reset": str(math.ceil(reset)),
            }


@dataclass(frozen=True)
class FaultView:
    """What is currently injected (returned by GET/POST /_lab/faults)."""

    latency: float
    fail_next: int
    fail_code: str
    outage_remaining: float
    outage_mode: str
    fail_actions: int
    action_seconds: float | None  # None: the cloud's own (its --action-seconds)


@dataclass(frozen=True)
class Verdict:
    """What the HTTP layer must do with one public call before handling it."""

    delay: float = 0.0
    outage: str | None = None  # one of OUTAGE_MODES
    fail_code: str | None = None


class Faults:
    """Injected faults; thread-safe, changed at run time through the admin listener."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency = 0.0
        self._fail_next = 0
        self._fail_code = "unavailable"
        self._outage_until = 0.0
        self._outage_mode = "close"
        self._fail_actions = 0
        self._action_seconds: float | None = None

    def configure(
        self,
        *,
        latency: float | None = None,
        fail_next: int | None = None,
        code: str | None = None,
        outage: float | None = None,
        outage_mode: str | None = None,
        fail_actions: int | None = None,
        action_seconds: float | None = None,
    ) -> None:
        """Change the given knobs only; validation errors raise ValueError before any change.
        `action_seconds`: how long each action started from now on runs (Hetzner's take
        seconds; the lab's default is short)."""
        if latency is not None and not 0 <= latency <= 600:
            raise ValueError("latency must be between 0 and 600 seconds")
        if fail_next is not None and fail_next < 0:
            raise ValueError("fail_next must be ≥ 0")
        if code is not None and code not in STATUS_BY_CODE:
            raise ValueError(f"unknown error code {code!r}; known: {sorted(STATUS_BY_CODE)}")
        if outage is not None and not 0 <= outage <= 86400:
            raise ValueError("outage must be between 0 and 86400 seconds")
        if outage_mode is not None and outage_mode not in OUTAGE_MODES:
            raise ValueError(f"outage_mode must be one of {OUTAGE_MODES}")
        if fail_actions is not None and fail_actions < 0:
            raise ValueError("fail_actions must be ≥ 0")
        if action_seconds is not None and not 0 <= action_seconds <= 600:
            raise ValueError("action_seconds must be between 0 and 600 seconds")
        with self._lock:
            if latency is not None:
                self._latency = latency
            if fail_next is not None:
                self._fail_next = fail_next
            if code is not None:
                self._fail_code = code
            if outage is not None:
                self._outage_until = time.monotonic() + outage
            if outage_mode is not None:
                self._outage_mode = outage_mode
            if fail_actions is not None:
                self._fail_actions = fail_actions
            if action_seconds is not None:
                self._action_seconds = action_seconds

    def clear(self) -> None:
        with self._lock:
            self._latency = 0.0
            self._fail_next = 0
            self._fail_code = "unavailable"
            self._outage_until = 0.0
            self._outage_mode = "close"
            self._fail_actions = 0
            self._action_seconds = None

    def view(self) -> FaultView:
        with self._lock:
            return FaultView(
                latency=self._latency,
                fail_next=self._fail_next,
                fail_code=self._fail_code,
                outage_remaining=max(0.0, self._outage_until - time.monotonic()),
                outage_mode=self._outage_mode,
                fail_actions=self._fail_actions,
                action_seconds=self._action_seconds,
            )

    def action_seconds(self, default: float) -> float:
        """How long an action started now runs: the injected time, else `default`."""
        with self._lock:
            return default if self._action_seconds is None else self._action_seconds

    def in_outage(self) -> bool:
        with self._lock:
            return time.monotonic() < self._outage_until

    def judge(self) -> Verdict:
        """Decide the fate of one public call (consumes one `fail_next` count if set)."""
        with self._lock:
            if time.monotonic() < self._outage_until:
                return Verdict(outage=self._outage_mode)
            code = None
            if self._fail_next > 0:
                self._fail_next -= 1
                code = self._fail_code
            return Verdict(delay=self._latency, fail_code=code)

    def take_action_failure(self) -> bool:
        """True if the action being created must end in status `error`."""
        with self._lock:
            if self._fail_actions > 0:
                self._fail_actions -= 1
                return True
            return False


@dataclass(frozen=True)
class Call:
    """One public call as the call log keeps it: no headers, no body, never the token."""

    time: float
    method: str
    path: str
    status: int | None  # None: the connection was closed without an answer (outage)
    duration: float


class CallLog:
    """A bounded ring of recent calls, for tests and for `inv lab.status`."""

    def __init__(self, size: int = 1000) -> None:
        self._calls: deque[Call] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def dump(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(c) for c in self._calls]
