"""Entry point: `python3 -m rbk8s PROGRAM ARGS` (kubeadm, kubectl, kubelet, containerd, apiserver,
etcdctl, etcdutl). The lab's etcd-client package ships only etcdctl (3.4, as Debian 12's);
etcdutl (3.6) is for tests of hosts with a newer etcd-client."""

import sys

from . import daemons, kubeadm


def main() -> int:
    prog, args = (sys.argv[1:2] or [""])[0], sys.argv[2:]
    if prog == "kubeadm":
        return kubeadm.main(args)
    if prog == "kubectl":
        return daemons.kubectl(args)
    if prog == "kubelet":
        return daemons.kubelet(args)
    if prog in ("etcdctl", "etcdutl"):
        from . import etcd

        return etcd.etcdctl(args) if prog == "etcdctl" else etcd.etcdutl(args)
    if prog == "containerd":
        from . import containerd

        return containerd.main(args)
    if prog == "apiserver":
        from pathlib import Path

        return daemons.apiserver(Path(args[0]))
    sys.stderr.write(f"rbk8s: unknown program {prog!r}\n")
    return 2


sys.exit(main())
