"""callback-ari: virtual-hold callbacks for Asterisk queues over ARI and AMI."""

__version__ = "0.1.0"
