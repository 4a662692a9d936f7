"""XLA_FLAGS for a subprocess with N simulated CPU devices, keeping the suite's own flags (which
jax reads at import, so a process's device count is fixed before jax is imported)."""

import os
import re


def xla_flags(devices: int) -> str:
    kept = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    return f"{kept.strip()} --xla_force_host_platform_device_count={devices}".strip()
