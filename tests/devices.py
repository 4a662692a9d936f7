"""XLA_FLAGS for a subprocess with N simulated CPU devices, keeping the suite's own flags (which
jax reads at import, so a process's device count is fixed before jax is imported)."""

import os
import re


def xla_flags(devices: int) -> str:
    kept = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    return f"{kept.strip()} --xla_force_host_platform_device_count={devices}".strip()


def run_with_devices(script: str, devices: int, *args: str, timeout: int = 900,
                     env: dict | None = None) -> dict:
    """Run `script` in a subprocess with `devices` simulated CPU devices and the repo on its path;
    return the JSON it prints on its `RESULT ` line (its stderr tail on failure)."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full_env = dict(os.environ, XLA_FLAGS=xla_flags(devices), PYTHONPATH=root, **(env or {}))
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])
