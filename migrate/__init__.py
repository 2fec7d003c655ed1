"""migrate: move a bare-metal cluster from MetalLB to Cilium LB-IPAM and L2 announcements."""

__version__ = "0.1.0"
