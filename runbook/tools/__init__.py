"""The tools the runbook drives on hosts, as pure functions: HAProxy's runtime API, etcd,
static pods, Kubernetes versions, the local etcd snapshots."""
