"""FakeCloud: the simulated project's state, its actions and their timing.

An action answers `running` at once and becomes `success` after `action_seconds` (a timer
thread), like Hetzner's. Its effect lands at that moment: the state changes, `on_change` is called
with a copy (the lab re-routes there; another action's effect does not wait for it), and only
then does the action report success, so a client that waited for the action can rely on the
network having moved. While an action runs, its resource is locked and further actions on it
answer 423 `locked`.
"""

from __future__ import annotations

import copy
import functools
import hmac
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.fakecloud import firewalls, inputs, ops, shapes
from lab.fakecloud.errors import ApiError, invalid_field
from lab.fakecloud.faults import CallLog, Faults, TokenBucket
from lab.fakecloud.state import JSON, allocate_id, load_state, save_state

log = logging.getLogger(__name__)

OnChange = Callable[[dict[str, Any]], None]
Response = tuple[int, JSON]
MAX_ACTIONS_KEPT = 2000

_PLANNERS: dict[tuple[str, str], Callable[[JSON, JSON, dict[str, Any]], ops.Plan]] = {
    ("servers", "attach_to_network"): ops.plan_attach,
    ("servers", "detach_from_network"): ops.plan_detach,
    ("servers", "change_alias_ips"): ops.plan_alias,
    ("floating_ips", "assign"): ops.plan_assign,
    ("floating_ips", "unassign"): ops.plan_unassign,
    ("floating_ips", "change_dns_ptr"): ops.plan_dns_ptr,
    ("networks", "add_subnet"): ops.plan_add_subnet,
    ("firewalls", "set_rules"): ops.plan_set_rules,
    ("firewalls", "apply_to_resources"): ops.plan_apply_firewall,
    ("firewalls", "remove_from_resources"): ops.plan_remove_firewall,
}
_SORT_KEYS = ("id", "name", "created", "command", "status", "started", "finished")


class FakeCloud:
    """The model behind the HTTP server (lab contract: `lab.fakecloud.server.FakeCloud`)."""

    def __init__(
        self,
        state_path: Path,
        token: str,
        *,
        action_seconds: float = 0.2,
        on_change: OnChange | None = None,
        rate_limit: int = 3600,
        rate_refill_per_s: float = 1.0,
    ) -> None:
        if not token:
            raise ValueError("the API token must not be empty")
        self.state_path = Path(state_path)
        self._token = token.encode()  # the newest token
        self._tokens: dict[bytes, bool] = {self._token: True}  # every valid one: may it write
        self.action_seconds = action_seconds
        self.on_change = on_change
        self.faults = Faults()
        self.bucket = TokenBucket(rate_limit, rate_refill_per_s)
        self.calls = CallLog()
        self._lock = threading.RLock()
        self._notify_lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._timers: dict[int, threading.Timer] = {}
        self._closed = False
        self._state = load_state(self.state_path)
        for p in self._state["pending"]:  # actions that were running when we stopped
            self._schedule(p["action"])

    # ----- plumbing -------------------------------------------------------------------------
    def token_access(self, presented: str) -> bool | None:
        """What `presented` may do: None, not a valid token (401); False, a Read token (its
        writes answer 403 forbidden, as Hetzner's do); True, a Read & Write token. Compared in
        constant time with each token, so the answer time does not leak one."""
        found: bool | None = None
        for token, writes in self._tokens.items():
            if hmac.compare_digest(presented.encode(), token):
                found = writes
        return found

    def rotate_token(self, new: str, *, read_only: bool = False, revoke: bool = True) -> None:
        """A new API token (`read_only`: a Read token, as the Hetzner console also makes); with
        `revoke` every other token is revoked at once (as deleting it in the console does):
        every call with one gets 401 unauthorized from now on. Without, the old ones stay valid
        (a new token made before the old one is deleted)."""
        if not new:
            raise ValueError("the API token must not be empty")
        self._token = new.encode()
        if revoke:
            self._tokens.clear()
        self._tokens[self._token] = not read_only

    def snapshot(self) -> JSON:
        with self._lock:
            return copy.deepcopy(self._state)

    def notify(self) -> None:
        """Call on_change with the current state (the CLI does this at start-up)."""
        if self.on_change is None:
            return
        with self._notify_lock:
            self.on_change(self.snapshot())

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until no action is running; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._state["pending"]:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def close(self) -> None:
        """Stop the timers; running actions stay in the state file and resume after a restart."""
        with self._lock:
            self._closed = True
            for t in self._timers.values():
                t.cancel()
            self._timers.clear()

    def _persist(self) -> None:
        save_state(self.state_path, self._state)

    def _schedule(self, aid: int, seconds: float | None = None) -> None:
        if seconds is None:
            seconds = self.faults.action_seconds(self.action_seconds)
        timer = threading.Timer(seconds, self._complete, args=(aid,))
        timer.daemon = True
        self._timers[aid] = timer
        timer.start()

    # ----- actions --------------------------------------------------------------------------
    def _start_action(self, plan: ops.Plan, seconds: float | None = None) -> Response:
        """Lock the resource, record a running action, schedule its completion (after
        `seconds`, or the cloud's action time)."""
        self._check_unlocked(plan.lock)
        aid = allocate_id(self._state)
        action = shapes.action(aid, plan.command, plan.resources)
        self._state["actions"].append(action)
        del self._state["actions"][:-MAX_ACTIONS_KEPT]
        self._state["pending"].append(
            {
                "action": aid,
                "op": plan.op,
                "args": plan.args,
                "lock": list(plan.lock),
                "fail": self.faults.take_action_failure(),
            }
        )
        self._set_locked(plan.lock, True)
        self._persist()
        self._schedule(aid, seconds)
        return 201, {"action": copy.deepcopy(action)}

    def busy(self, server_name: str, seconds: float) -> JSON:
        """An action of the cloud's own on a server for `seconds` (Hetzner: a backup or a
        snapshot, `create_image`, started by its schedule or from the console): it changes
        nothing the lab routes, and it locks the server, so every action on it meanwhile
        answers 423 `locked`, as Hetzner's do. Returns the running action."""
        if not 0 < seconds <= 600:
            raise ValueError("seconds must be more than 0 and at most 600")
        with self._lock:
            found = [s for s in self._state["servers"] if s["name"] == server_name]
            if not found:
                raise ApiError("not_found", f"server {server_name!r} not found")
            rid = found[0]["id"]
            plan = ops.Plan("create_image", [("server", rid)], ("server", rid), "none", {})
            return self._start_action(plan, seconds)[1]["action"]

    def _check_unlocked(self, lock: tuple[str, int]) -> None:
        if any(tuple(p["lock"]) == lock for p in self._state["pending"]):
            kind, rid = lock
            raise ApiError("locked", f"{kind} {rid} is locked by another running action")

    def _set_locked(self, lock: tuple[str, int] | list[Any], value: bool) -> None:
        kind, rid = lock
        if kind == "server":
            for srv in self._state["servers"]:
                if srv["id"] == rid:
                    srv["locked"] = value

    def _action(self, aid: int) -> JSON:
        for a in self._state["actions"]:
            if a["id"] == aid:
                return a
        raise ApiError("not_found", f"action with ID '{aid}' not found")

    def _complete(self, aid: int) -> None:
        """Timer callback: apply the effect, tell the lab, then report success.

        The effect lands at once, under the state lock only: like Hetzner's, an action on one
        resource does not wait for the lab to finish re-routing another's (the lab's `ip` calls
        take a while; waiting for them delayed, e.g., a freed alias IP by a floating IP's move).
        The lab is then told under the notify lock, with the state as it is by then, so the
        routing follows the newest state in order; only after that does the action report."""
        with self._lock:
            self._timers.pop(aid, None)
            pending = next((p for p in self._state["pending"] if p["action"] == aid), None)
            if self._closed or pending is None:
                return
            error: JSON | None = None
            if pending["fail"]:
                error = {"code": "action_failed", "message": "Action failed (injected fault)"}
            else:
                ops.apply(self._state, pending["op"], pending["args"])
                self._persist()
        if error is None and self.on_change is not None and pending["op"] != "none":
            with self._notify_lock:
                try:
                    self.on_change(self.snapshot())
                except Exception as exc:
                    log.exception("on_change failed for action %s", aid)
                    error = {"code": "action_failed", "message": f"lab on_change failed: {exc}"}
        with self._lock:
            if self._closed:
                return
            action = self._action(aid)
            action.update(
                status="error" if error else "success",
                progress=100,
                finished=shapes.now_iso(),
                error=error,
            )
            self._state["pending"].remove(pending)
            self._set_locked(pending["lock"], False)
            self._persist()
            self._idle.notify_all()

    # ----- API operations -------------------------------------------------------------------
    def list_resources(self, collection: str, query: dict[str, list[str]]) -> Response:
        with self._lock:
            items = list(self._state[collection])
            name = query.get("name")
            if name:
                items = [i for i in items if i["name"] == name[-1]]
            selector = query.get("label_selector")
            if selector:
                match = inputs.label_selector(selector[-1])
                items = [i for i in items if match(i["labels"])]
            if collection == "servers" and query.get("status"):
                items = [i for i in items if i["status"] in query["status"]]
            items = _sorted(items, query.get("sort", []))
            page, meta = inputs.paginate(items, query)
            return 200, {collection: copy.deepcopy(page), "meta": meta}

    def get_resource(self, collection: str, rid: int) -> Response:
        with self._lock:
            return 200, {
                ops.KINDS[collection]: copy.deepcopy(ops.find(self._state, collection, rid))
            }

    def resource_action(self, collection: str, rid: int, command: str, body: JSON) -> Response:
        planner = _PLANNERS.get((collection, command))
        if planner is None:
            raise ApiError("not_found", f"unknown action {command!r}")
        with self._lock:
            resource = ops.find(self._state, collection, rid)
            self._check_unlocked(
                (ops.KINDS[collection], rid)
            )  # busy: locked before input is judged
            status, answer = self._start_action(planner(self._state, resource, body))
            if collection == "firewalls":  # firewall actions answer a list of actions
                return status, {"actions": [answer["action"]]}
            return status, answer

    def _mutate(self, change: Callable[[], Response]) -> Response:
        """A synchronous change (no action): apply, persist, then tell the lab (on_change)."""
        with self._notify_lock:
            with self._lock:
                answer = change()
                self._persist()
                snap = copy.deepcopy(self._state)
            if self.on_change is not None:
                self.on_change(snap)
        return answer

    def create_network(self, body: JSON) -> Response:
        return self._mutate(
            lambda: (201, {"network": copy.deepcopy(ops.create_network(self._state, body))})
        )

    def update_resource(self, collection: str, rid: int, body: JSON) -> Response:
        """PUT /servers/{id}, /firewalls/{id}: name and labels."""
        if collection not in ("servers", "firewalls"):
            raise ApiError("method_not_allowed", f"PUT not supported on {collection}")

        def change() -> Response:
            item = ops.find(self._state, collection, rid)
            if collection == "servers":
                ops.update_server(self._state, item, body)
            else:
                firewalls.update(item, self._state, body)
            return 200, {ops.KINDS[collection]: copy.deepcopy(item)}

        return self._mutate(change)

    def create_firewall(self, body: JSON) -> Response:
        """POST /firewalls: synchronous; `apply_to` starts one apply_firewall action."""
        with self._lock:
            fw, apply_to = firewalls.create(self._state, body)
            actions: list[JSON] = []
            if apply_to:
                plan = ops.plan_apply_firewall(self._state, fw, {"apply_to": apply_to})
                actions.append(self._start_action(plan)[1]["action"])
            self._persist()
            return 201, {"firewall": copy.deepcopy(fw), "actions": actions}

    def delete_resource(self, collection: str, rid: int) -> Response:
        """DELETE /firewalls/{id} (refused while applied); other kinds cannot be deleted here."""
        if collection != "firewalls":
            raise ApiError("method_not_allowed", f"DELETE not supported on {collection}")

        def change() -> Response:
            fw = ops.find(self._state, collection, rid)
            self._check_unlocked(("firewall", rid))
            firewalls.delete(fw, self._state)
            return 204, {}

        return self._mutate(change)

    def get_action(self, aid: int) -> Response:
        with self._lock:
            return 200, {"action": copy.deepcopy(self._action(aid))}

    def list_actions(self, query: dict[str, list[str]]) -> Response:
        """GET /actions needs `id` since 2025 (listing all actions was removed)."""
        if not query.get("id"):
            raise invalid_field("id", "Missing required field")
        with self._lock:
            return _action_answer(self._state["actions"], query, None)

    def kind_actions(
        self, collection: str, query: dict[str, list[str]], aid: int | None = None
    ) -> Response:
        """GET /{collection}/actions[/{id}]: actions touching any resource of that kind."""
        kind = ops.KINDS[collection]
        with self._lock:
            mine = [
                a for a in self._state["actions"] if any(r["type"] == kind for r in a["resources"])
            ]
            return _action_answer(mine, query, aid)

    def resource_actions(
        self, collection: str, rid: int, query: dict[str, list[str]], aid: int | None = None
    ) -> Response:
        """GET /{collection}/{id}/actions[/{action_id}]: only actions touching that resource."""
        kind = ops.KINDS[collection]
        with self._lock:
            ops.find(self._state, collection, rid)
            mine = [
                a for a in self._state["actions"] if {"id": rid, "type": kind} in a["resources"]
            ]
            return _action_answer(mine, query, aid)


def _action_answer(actions: list[JSON], query: dict[str, list[str]], aid: int | None) -> Response:
    """One action by id, or the filtered (`id`, `status`), sorted, paginated list."""
    if aid is not None:
        hit = next((a for a in actions if a["id"] == aid), None)
        if hit is None:
            raise ApiError("not_found", f"action with ID '{aid}' not found")
        return 200, {"action": copy.deepcopy(hit)}
    if query.get("id"):
        try:
            ids = {int(v) for v in query["id"]}
        except ValueError as exc:
            raise invalid_field("id", "must be an integer") from exc
        actions = [a for a in actions if a["id"] in ids]
    if query.get("status"):
        actions = [a for a in actions if a["status"] in query["status"]]
    page, meta = inputs.paginate(_sorted(actions, query.get("sort", [])), query)
    return 200, {"actions": copy.deepcopy(page), "meta": meta}


def _sorted(items: list[JSON], sort: list[str]) -> list[JSON]:
    """Hetzner's `sort=field[:asc|:desc]`, applied last-to-first so the first one wins."""
    result = sorted(items, key=lambda i: i["id"])
    for spec in reversed(sort):
        key, _, direction = spec.partition(":")
        if key not in _SORT_KEYS or direction not in ("", "asc", "desc"):
            raise invalid_field("sort", f"invalid sort {spec!r}")
        result.sort(key=functools.partial(_sort_value, key), reverse=direction == "desc")
    return result


def _sort_value(key: str, item: JSON) -> tuple[int, int, str]:
    value = item.get(key)
    if isinstance(value, int):
        return (0, value, "")
    return (0 if value is not None else 1, 0, str(value or ""))
