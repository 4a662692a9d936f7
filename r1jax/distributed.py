"""Several processes, one program: only process 0 writes shared files, the others wait for them.

Every process runs the same code on its part of the mesh (`jax.distributed`); files in a shared
workdir (tokenizer, data sets, eval.json, tables) are written once, by process 0, and the others
read them after a barrier. With one process these are plain calls.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax
from jax.experimental import multihost_utils

T = TypeVar("T")


def is_main() -> bool:
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def on_main(name: str, write: Callable[[], T]) -> T | None:
    """Run `write` on process 0 only, then make every process wait for it; returns its result on
    process 0 and None elsewhere."""
    result = write() if is_main() else None
    barrier(name)
    return result
