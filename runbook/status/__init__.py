"""What is read for status: the LB pair, the cluster, certificates, the failover drill."""
