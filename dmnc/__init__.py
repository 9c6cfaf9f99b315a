"""dmnc: reach Docker containers by IP from the host through a userspace WireGuard tunnel."""

__version__ = "0.1.0"
