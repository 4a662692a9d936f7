"""What a result ran on, printed beside every table: XLA compiles for the host's instruction set
and splits work by core count, so results are bit-identical only on the same CPU model,
instruction set, core count and versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform


def _cpuinfo() -> tuple[str, list[str]]:
    """(model name, flags) from /proc/cpuinfo; (platform's name, []) where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU", []
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.machine())
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith(("flags", "Features"))),
                 [])
    return name, flags


def instruction_set(flags: list[str]) -> str:
    """The widest x86 vector extension XLA:CPU can use (or the architecture's name)."""
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags:
        return "AVX2"
    return platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, what XLA's thread pool sizes itself by)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def describe(packages: tuple[str, ...] = ("jax", "jaxlib")) -> str:
    """e.g. "Intel(R) Xeon(R) Processor (AVX-512), 2 cores; jax 0.11.2, jaxlib 0.11.2"."""
    name, flags = _cpuinfo()
    versions = []
    for package in packages:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return f"{name} ({instruction_set(flags)}), {usable_cores()} cores; {', '.join(versions)}"
