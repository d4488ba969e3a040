"""A control plane's static pods, stopped and started the way kubeadm's docs do it: the kubelet
runs what is in /etc/kubernetes/manifests, so moving the manifests out stops the pods and moving
them back starts them (restore, certificate renewal)."""

from __future__ import annotations

from .etcdcli import MANIFESTS

PARKED = "/etc/kubernetes/runbook-parked-manifests"


def wait_api_stopped() -> str:
    """Shell: until nothing answers on the local API port (the kubelet stopped the pod)."""
    return (
        "for i in $(seq 60); do curl -sk --max-time 1 -o /dev/null https://127.0.0.1:6443/livez "
        "|| exit 0; sleep 1; done; echo 'the API server still answers' >&2; exit 1"
    )


def park() -> str:
    """Shell: move every manifest out and wait until the API server is gone."""
    return f"install -d -m 0700 {PARKED} && mv {MANIFESTS}/*.yaml {PARKED}/ && {wait_api_stopped()}"


def unpark() -> str:
    """Shell: every parked manifest back (the kubelet starts the pods again)."""
    return f"mv {PARKED}/*.yaml {MANIFESTS}/ && rmdir {PARKED}"


def count(directory: str) -> str:
    """Shell: how many manifests are in `directory` (0 when it does not exist)."""
    return f"ls {directory} 2>/dev/null | grep -c '[.]yaml$'"
