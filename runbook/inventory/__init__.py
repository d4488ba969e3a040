"""The inventory (``hosts.yaml``): models, loading with every rule, host selection.

Every key, its type, default and rule: docs/inventory.md.

Public API: ``load_inventory`` → ``Inventory`` or ``InventoryError`` (``.problems``: all of them).
"""

from runbook.inventory.fields import SSHEndpoint, parse_endpoint
from runbook.inventory.load import load_inventory, parse_inventory
from runbook.inventory.models import (
    API_PORT,
    ROLES,
    ClusterSpec,
    EtcdSpec,
    FloatingIPSpec,
    HcloudSpec,
    HeartbeatSpec,
    HostSpec,
    InsecureAPISpec,
    Inventory,
    InventoryError,
    KubernetesSpec,
    LoadBalancerSpec,
    NetworkSpec,
    PackageRepoSpec,
    Problem,
    Role,
    SSHSpec,
)
from runbook.inventory.selection import SUMMARY_COLUMNS, select_hosts, summary_facts, summary_rows

__all__ = [
    "API_PORT",
    "ROLES",
    "SUMMARY_COLUMNS",
    "ClusterSpec",
    "EtcdSpec",
    "FloatingIPSpec",
    "HcloudSpec",
    "HeartbeatSpec",
    "HostSpec",
    "InsecureAPISpec",
    "Inventory",
    "InventoryError",
    "KubernetesSpec",
    "LoadBalancerSpec",
    "NetworkSpec",
    "PackageRepoSpec",
    "Problem",
    "Role",
    "SSHEndpoint",
    "SSHSpec",
    "load_inventory",
    "parse_endpoint",
    "parse_inventory",
    "select_hosts",
    "summary_facts",
    "summary_rows",
]
