"""CPU threads for training: what the process sets before torch loads, and the thread count.

Kept free of torch imports: :func:`configure` must run before torch is first imported.
"""

from __future__ import annotations

import os


def configure(env=None) -> None:
    """Process-wide OpenMP settings, before torch loads; a setting already in ``env`` wins."""
    env = os.environ if env is None else env
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not all the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
