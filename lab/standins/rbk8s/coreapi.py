"""LAB STAND-IN — the API server's `/api` paths with authentication and RBAC, kept small.

Authentication as the real API server does it: a client certificate of the admin (kubeadm's
`kubeadm:cluster-admins`, bound to cluster-admin), or a bearer token that is the token of a
`kubernetes.io/service-account-token` Secret whose ServiceAccount exists (otherwise 401), or
nobody (`system:anonymous`: only the health paths, handled before this module).

Authorization (RBAC): a ServiceAccount gets the union of the ClusterRoles its
ClusterRoleBindings name. The built-in roles are modelled on the resources served here:
`view` reads everything but Secrets and cannot write; `edit`/`admin` also write namespaced
objects; `cluster-admin` may do anything; a binding to any other (unknown) role grants nothing,
as a binding to a missing ClusterRole does. Discovery (`/api`, `/api/v1`) needs an authenticated
user. The request is authorized before it is routed (a forbidden write to an unknown path is 403,
not 404), and a refusal is worded as the real one is.

Served: `/api`, `/api/v1`, namespaces (list, get, create, delete), nodes (list, get), and list /
get / create / delete of a few namespaced kinds from the object store. Not served: watches,
field/label selectors, PUT/PATCH (405 after authorization), anything under `/apis`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

ADMIN_CNS = ("kubernetes-admin", "super-admin")
BUILTIN_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")
UNDELETABLE = ("default", "kube-public", "kube-system")
READ = frozenset({"get", "list", "watch"})
WRITE = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# plural → kind of the object store (`kind/namespace/name`)
NAMESPACED = {
    "configmaps": "configmap",
    "pods": "pod",
    "secrets": "secret",
    "serviceaccounts": "serviceaccount",
    "services": "service",
}
ALL = frozenset({"*"})
RULES: dict[str, tuple[tuple[frozenset[str], frozenset[str]], ...]] = {
    "cluster-admin": ((ALL, ALL),),
    "admin": ((READ | WRITE, frozenset(NAMESPACED)), (READ, frozenset({"namespaces"}))),
    "edit": ((READ | WRITE, frozenset(NAMESPACED)), (READ, frozenset({"namespaces"}))),
    "view": (
        (READ, frozenset(NAMESPACED) - {"secrets"}),
        (READ, frozenset({"namespaces"})),
    ),
}
SA_TOKEN = "kubernetes.io/service-account-token"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False
    service_account: tuple[str, str] | None = None  # (namespace, name)

    @property
    def authenticated(self) -> bool:
        return self.name != "system:anonymous"


ANONYMOUS = User("system:anonymous")


@dataclass(frozen=True)
class Request:
    verb: str
    resource: str  # plural, "" for a non-resource path
    namespace: str
    name: str
    path: str


def status(code: int, reason: str, message: str, kind: str = "") -> dict[str, Any]:
    """A `Status` object, the body of every API error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if kind:
        body["details"] = {"kind": kind}
    return body


def authenticate(data: dict[str, Any], *, bearer: str | None, client_cn: str) -> User | None:
    """The request's user; None when a bearer token is presented but invalid (401)."""
    if bearer is not None:
        for key, obj in data["objects"].items():
            if not key.startswith("secret/") or obj.get("type") != SA_TOKEN:
                continue
            b64 = (obj.get("data") or {}).get("token", "")
            if not b64 or not secrets.compare_digest(base64.b64decode(b64), bearer.encode()):
                continue
            ns = key.split("/")[1]
            sa = ((obj.get("metadata") or {}).get("annotations") or {}).get(
                "kubernetes.io/service-account.name", ""
            )
            if f"serviceaccount/{ns}/{sa}" not in data["objects"]:
                return None  # the token of a deleted ServiceAccount is refused
            return User(f"system:serviceaccount:{ns}:{sa}", service_account=(ns, sa))
        return None
    if client_cn in ADMIN_CNS:
        return User(client_cn, admin=True)
    return ANONYMOUS


def roles_of(data: dict[str, Any], user: User) -> list[str]:
    """ClusterRoles bound to the user's ServiceAccount by ClusterRoleBindings."""
    if user.service_account is None:
        return []
    ns, name = user.service_account
    out = []
    for key, obj in data["objects"].items():
        if not key.startswith("clusterrolebinding/"):
            continue
        for s in obj.get("subjects") or []:
            if (s.get("kind"), s.get("name"), s.get("namespace")) == ("ServiceAccount", name, ns):
                ref = obj.get("roleRef") or {}
                if ref.get("kind") == "ClusterRole":
                    out.append(str(ref.get("name")))
    return out


def allowed(data: dict[str, Any], user: User, req: Request) -> bool:
    if user.admin:
        return True
    if not req.resource:  # discovery: system:discovery is bound to system:authenticated
        return user.authenticated and req.verb == "get"
    for role in roles_of(data, user):
        for verbs, resources in RULES.get(role, ()):
            if (verbs & {req.verb, "*"}) and (resources & {req.resource, "*"}):
                return True
    return False


def forbidden(user: User, req: Request) -> dict[str, Any]:
    if not req.resource:
        return status(
            403, "Forbidden", f'forbidden: User "{user.name}" cannot {req.verb} path "{req.path}"'
        )
    where = f'in the namespace "{req.namespace}"' if req.namespace else "at the cluster scope"
    what = f'{req.resource} "{req.name}"' if req.name else req.resource
    return status(
        403,
        "Forbidden",
        f'{what} is forbidden: User "{user.name}" cannot {req.verb} resource '
        f'"{req.resource}" in API group "" {where}',
        req.resource,
    )


def parse(method: str, path: str) -> Request:
    """Method and path → the RBAC request attributes (verb, resource, namespace, name)."""
    parts = [p for p in path.split("/") if p]
    named = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    collection = {"GET": "list", "POST": "create", "DELETE": "deletecollection"}
    verb_of = lambda has_name: (named if has_name else collection).get(method, method.lower())  # noqa: E731
    if parts[:2] != ["api", "v1"] or len(parts) == 2:
        return Request(method.lower() if method != "GET" else "get", "", "", "", path)
    rest = parts[2:]
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, resource, name = rest[1], rest[2], "/".join(rest[3:])
        return Request(verb_of(bool(name)), resource, ns, name, path)
    resource, name = rest[0], "/".join(rest[1:])
    return Request(verb_of(bool(name)), resource, "", name, path)


def _namespace(name: str) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name},
        "status": {"phase": "Active"},
    }


def namespaces(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {n: _namespace(n) for n in BUILTIN_NAMESPACES}
    for key, obj in data["objects"].items():
        if key.startswith("namespace//"):
            found[key.split("/", 2)[2]] = obj
    return dict(sorted(found.items()))


def serve(
    store: Any, user: User, method: str, path: str, body: Any, *, server_address: str
) -> tuple[int, dict[str, Any], str]:
    """(HTTP status, JSON body, store key written or "") for one `/api…` request."""
    req = parse(method, path.partition("?")[0])
    if not allowed(store.data, user, req):
        return 403, forbidden(user, req), ""
    if not req.resource:
        if req.path.rstrip("/") == "/api":
            return (
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
                    ],
                },
                "",
            )
        if req.path.rstrip("/") == "/api/v1":
            res = [{"name": r, "namespaced": True} for r in NAMESPACED]
            res += [{"name": "namespaces", "namespaced": False}, {"name": "nodes"}]
            return 200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": res}, ""
        return 404, status(404, "NotFound", "the server could not find the requested resource"), ""
    if req.resource == "nodes" and req.verb in ("list", "get"):
        nodes = store.node_list()
        if req.verb == "list":
            return 200, nodes, ""
        for n in nodes["items"]:
            if n["metadata"]["name"] == req.name:
                return 200, n, ""
        return 404, status(404, "NotFound", f'nodes "{req.name}" not found', "nodes"), ""
    if req.resource == "namespaces" and not req.namespace:
        return _namespaces(store, req, body)
    if req.resource in NAMESPACED and req.namespace:
        return _namespaced(store, req, body)
    if req.verb in ("update", "patch"):
        return 405, status(405, "MethodNotAllowed", "the stand-in serves no updates"), ""
    return 404, status(404, "NotFound", "the server could not find the requested resource"), ""


def _namespaces(store: Any, req: Request, body: Any) -> tuple[int, dict[str, Any], str]:
    found = namespaces(store.data)
    if req.verb == "list":
        items = list(found.values())
        return 200, {"kind": "NamespaceList", "apiVersion": "v1", "items": items}, ""
    if req.verb == "get":
        if req.name in found:
            return 200, found[req.name], ""
        return 404, status(404, "NotFound", f'namespaces "{req.name}" not found', "namespaces"), ""
    if req.verb == "create":
        name = str(((body or {}).get("metadata") or {}).get("name", ""))
        if not DNS_LABEL.match(name):
            msg = f'Namespace "{name}" is invalid: metadata.name: Invalid value: "{name}"'
            return 422, status(422, "Invalid", msg, "namespaces"), ""
        if name in found:
            msg = f'namespaces "{name}" already exists'
            return 409, status(409, "AlreadyExists", msg, "namespaces"), ""
        obj = _namespace(name)
        return 201, obj, store.put(f"namespace//{name}", obj)
    if req.verb == "delete":
        if req.name in UNDELETABLE:
            msg = f'namespaces "{req.name}" is forbidden: this namespace may not be deleted'
            return 403, status(403, "Forbidden", msg, "namespaces"), ""
        key = f"namespace//{req.name}"
        if key not in store.data["objects"]:
            return 404, status(404, "NotFound", f'namespaces "{req.name}" not found'), ""
        store.delete([key])
        return 200, {**found[req.name], "status": {"phase": "Terminating"}}, key
    return 405, status(405, "MethodNotAllowed", f"{req.verb} is not served for namespaces"), ""


def _namespaced(store: Any, req: Request, body: Any) -> tuple[int, dict[str, Any], str]:
    kind = NAMESPACED[req.resource]
    objects = store.data["objects"]
    if req.namespace not in namespaces(store.data):
        return 404, status(404, "NotFound", f'namespaces "{req.namespace}" not found'), ""
    prefix = f"{kind}/{req.namespace}/"
    if req.verb == "list":
        items = [o for k, o in sorted(objects.items()) if k.startswith(prefix)]
        title = kind[:1].upper() + kind[1:]
        return 200, {"kind": f"{title}List", "apiVersion": "v1", "items": items}, ""
    key = prefix + req.name
    if req.verb == "get":
        if key in objects:
            return 200, objects[key], ""
        return 404, status(404, "NotFound", f'{req.resource} "{req.name}" not found'), ""
    if req.verb == "create":
        obj = json.loads(json.dumps(body or {}))
        name = str((obj.get("metadata") or {}).get("name", ""))
        key = prefix + name
        if not DNS_LABEL.match(name):
            return 422, status(422, "Invalid", f"metadata.name: Invalid value: {name!r}"), ""
        if key in objects:
            msg = f'{req.resource} "{name}" already exists'
            return 409, status(409, "AlreadyExists", msg, req.resource), ""
        obj.setdefault("metadata", {})["namespace"] = req.namespace
        return 201, obj, store.put(key, obj)
    if req.verb == "delete":
        if key not in objects:
            return 404, status(404, "NotFound", f'{req.resource} "{req.name}" not found'), ""
        obj = objects[key]
        store.delete([key])
        return 200, obj, key
    return 405, status(405, "MethodNotAllowed", f"{req.verb} is not served by the stand-in"), ""
