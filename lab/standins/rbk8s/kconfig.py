"""LAB STAND-IN — strict reading of kubeadm configuration files, as kubeadm 1.NN reads them.

What it refuses like the real kubeadm: API versions other than kubeadm.k8s.io/v1beta4 (v1beta1/2
removed long ago; v1beta3 removed in 1.37, deprecated before), unknown fields anywhere (kubeadm
decodes strictly), extraArgs/kubeletExtraArgs that are maps instead of v1beta4's lists of
{name, value}, malformed CIDRs/endpoints/tokens. What it does NOT check: every default kubeadm
fills in, component configs' contents (KubeletConfiguration etc. are accepted as opaque).
Runs with Debian's python3 + python3-yaml.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import yaml

GROUP = "kubeadm.k8s.io"
ARG = {"name": None, "value": None}
ARGS = [ARG]
NODE_REG = {
    "name": None,
    "criSocket": None,
    "taints": None,
    "kubeletExtraArgs": ARGS,
    "ignorePreflightErrors": None,
    "imagePullPolicy": None,
    "imagePullSerial": None,
}
ENDPOINT = {"advertiseAddress": None, "bindPort": None}
COMPONENT = {"extraArgs": ARGS, "extraVolumes": None, "extraEnvs": None}
TIMEOUTS = {
    "controlPlaneComponentHealthCheck": None,
    "kubeletHealthCheck": None,
    "kubernetesAPICall": None,
    "etcdAPICall": None,
    "tlsBootstrap": None,
    "discovery": None,
    "upgradeManifests": None,
}
SCHEMA: dict[str, dict[str, Any]] = {
    "InitConfiguration": {
        "apiVersion": None,
        "kind": None,
        "bootstrapTokens": None,
        "dryRun": None,
        "nodeRegistration": NODE_REG,
        "localAPIEndpoint": ENDPOINT,
        "certificateKey": None,
        "skipPhases": None,
        "patches": {"directory": None},
        "timeouts": TIMEOUTS,
    },
    "ClusterConfiguration": {
        "apiVersion": None,
        "kind": None,
        "etcd": {
            "local": {
                "imageRepository": None,
                "imageTag": None,
                "dataDir": None,
                "extraArgs": ARGS,
                "extraEnvs": None,
                "serverCertSANs": None,
                "peerCertSANs": None,
            },
            "external": {"endpoints": None, "caFile": None, "certFile": None, "keyFile": None},
        },
        "networking": {"serviceSubnet": None, "podSubnet": None, "dnsDomain": None},
        "kubernetesVersion": None,
        "controlPlaneEndpoint": None,
        "apiServer": {**COMPONENT, "certSANs": None},
        "controllerManager": COMPONENT,
        "scheduler": COMPONENT,
        "dns": {"disabled": None, "imageRepository": None, "imageTag": None},
        "proxy": {"disabled": None},
        "certificatesDir": None,
        "imageRepository": None,
        "featureGates": None,
        "clusterName": None,
        "encryptionAlgorithm": None,
        "certificateValidityPeriod": None,
        "caCertificateValidityPeriod": None,
    },
    "JoinConfiguration": {
        "apiVersion": None,
        "kind": None,
        "dryRun": None,
        "nodeRegistration": NODE_REG,
        "caCertPath": None,
        "discovery": {
            "bootstrapToken": {
                "token": None,
                "apiServerEndpoint": None,
                "caCertHashes": None,
                "unsafeSkipCAVerification": None,
            },
            "file": {"kubeConfigPath": None},
            "tlsBootstrapToken": None,
        },
        "controlPlane": {"localAPIEndpoint": ENDPOINT, "certificateKey": None},
        "skipPhases": None,
        "patches": {"directory": None},
        "timeouts": TIMEOUTS,
    },
}
OPAQUE = {
    ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration"),
    ("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration"),
}
TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
KEY_RE = re.compile(r"^[0-9a-f]{64}$")


class ConfigError(Exception):
    """What kubeadm prints before exiting 1."""


def _gvk(version: str, kind: str) -> str:
    return f'schema.GroupVersionKind{{Group:"{GROUP}", Version:"{version}", Kind:"{kind}"}}'


def _strict(doc: Any, schema: dict[str, Any], path: str, gvk: str) -> None:
    if not isinstance(doc, dict):
        raise ConfigError(
            f"error unmarshaling configuration {gvk}: {path or 'document'} is not an object"
        )
    for key, value in doc.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in schema:
            raise ConfigError(
                f"error unmarshaling configuration {gvk}: strict decoding error: "
                f'unknown field "{where}"'
            )
        sub = schema[key]
        if sub is ARGS:
            if not isinstance(value, list):
                raise ConfigError(
                    f"error unmarshaling configuration {gvk}: json: cannot unmarshal object "
                    f"into Go struct field .{where} of type []v1beta4.Arg"
                )
            for i, item in enumerate(value):
                _strict(item, ARG, f"{where}[{i}]", gvk)
                if not isinstance(item.get("name"), str) or not isinstance(item.get("value"), str):
                    raise ConfigError(f"{where}[{i}]: name and value must be strings")
        elif isinstance(sub, dict) and value is not None:
            _strict(value, sub, where, gvk)


def parse(text: str, *, minor: int) -> dict[str, dict[str, Any]]:
    """kind → document, for a kubeadm ``--config`` file; ConfigError as kubeadm words it."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ConfigError(f"error converting YAML to JSON: {exc}") from exc
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
            raise ConfigError("Object 'Kind' is missing in the configuration file")
        api, kind = str(d["apiVersion"]), str(d["kind"])
        if (api, kind) in OPAQUE:
            out[kind] = d
            continue
        group, _, version = api.partition("/")
        if group != GROUP:
            raise ConfigError(f'no kind "{kind}" is registered for version "{api}"')
        if version in ("v1alpha1", "v1alpha2", "v1alpha3", "v1beta1", "v1beta2") or (
            version == "v1beta3" and minor >= 37
        ):
            raise ConfigError(
                f'your configuration file uses an old API spec: "{api}" is no longer '
                "supported. Please use an older kubeadm and run 'kubeadm config migrate "
                "--old-config old.yaml --new-config new.yaml', which will write the new, "
                "similar spec using a newer API version."
            )
        if version != "v1beta4" and version != "v1beta3":
            raise ConfigError(f'no kind "{kind}" is registered for version "{api}"')
        if version == "v1beta3":
            raise ConfigError(
                f"{api} is deprecated and this stand-in accepts only kubeadm.k8s.io/v1beta4 "
                "(kubeadm config migrate)"
            )
        if kind not in SCHEMA:
            raise ConfigError(f'no kind "{kind}" is registered for version "{api}"')
        if kind in out:
            raise ConfigError(f"duplicate {kind} in the configuration file")
        _strict(d, SCHEMA[kind], "", _gvk(version, kind))
        out[kind] = d
    _semantics(out)
    return out


def _cidr(value: Any, what: str) -> None:
    try:
        ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        raise ConfigError(f"{what}: Invalid value: {value!r}: couldn't parse subnet") from exc


def _semantics(docs: dict[str, dict[str, Any]]) -> None:
    cluster = docs.get("ClusterConfiguration") or {}
    net = cluster.get("networking") or {}
    for key in ("podSubnet", "serviceSubnet"):
        if key in net:
            _cidr(net[key], f"networking.{key}")
    if "podSubnet" in net and "serviceSubnet" in net:
        a, b = ipaddress.ip_network(net["podSubnet"]), ipaddress.ip_network(net["serviceSubnet"])
        if a.overlaps(b):
            raise ConfigError("networking: podSubnet and serviceSubnet overlap")
    endpoint = cluster.get("controlPlaneEndpoint")
    if endpoint is not None and not re.match(r"^[A-Za-z0-9.-]+:\d{1,5}$", str(endpoint)):
        raise ConfigError(f"controlPlaneEndpoint: Invalid value: {endpoint!r}")
    join = docs.get("JoinConfiguration")
    if join:
        bt = (join.get("discovery") or {}).get("bootstrapToken") or {}
        if not TOKEN_RE.match(str(bt.get("token", ""))):
            raise ConfigError(
                "discovery.bootstrapToken.token: Invalid value: the bootstrap token is invalid"
            )
        hashes = bt.get("caCertHashes") or []
        if not hashes and not bt.get("unsafeSkipCAVerification"):
            raise ConfigError(
                "discovery.bootstrapToken: Invalid value: using token-based discovery without "
                "caCertHashes can be unsafe. Set unsafeSkipCAVerification as true"
            )
        if any(not HASH_RE.match(str(h)) for h in hashes):
            raise ConfigError("discovery.bootstrapToken.caCertHashes: invalid hash format")
        cp = join.get("controlPlane")
        if cp is not None and not KEY_RE.match(str(cp.get("certificateKey", ""))):
            raise ConfigError("controlPlane.certificateKey: Invalid value: must be 64 hex")


def args(items: list[dict[str, str]] | None) -> dict[str, str]:
    return {a["name"]: a["value"] for a in items or []}
