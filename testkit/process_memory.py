"""This process's memory, as Linux reports it."""

from __future__ import annotations


def rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak) of this process, in MB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024
