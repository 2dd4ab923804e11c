"""Resident memory, the one figure every benchmark here prints for memory: peak and current RSS in MiB.

Where a benchmark compares memory, each peer runs in a process of its own, so the process's peak is that
peer's. The peak is the kernel's high-water mark of this process image (`VmHWM`), not `ru_maxrss`: Linux
keeps `ru_maxrss` across fork and exec, so a child started by a large parent would report the parent's peak.
"""

from __future__ import annotations

import resource


def _status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:  # the kernel's, not a user path
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak RSS of this process image; `ru_maxrss` where there is no /proc (not Linux: no inheritance issue)."""
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def largest_child_peak_rss_mib() -> float:
    """Peak RSS of the largest waited-for child (`ru_maxrss`: for forked workers, at least the parent's size at
    the fork)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def current_rss_mib() -> float:
    """RSS now (after loading weights and libraries, say); NaN where there is no /proc."""
    current = _status_mib("VmRSS")
    return current if current is not None else float("nan")
