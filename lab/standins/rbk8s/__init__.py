"""LAB STAND-INS for kubeadm, kubelet, kubectl, containerd and the API server (see README).

Installed on lab hosts as Debian packages built by `lab.standins.build_debs`; run with Debian's
python3 (+ python3-yaml, openssl). VERSION is the Kubernetes version the packages claim.
"""

import os

try:
    from ._version import VERSION  # written into the package at build time
except ImportError:  # running from the source tree (tests)
    VERSION = os.environ.get("RBK8S_VERSION", "1.36.0")
