"""forkscale: scale fleets of vSphere instant clones, fast, safely and observably."""

__version__ = "0.1.0"
