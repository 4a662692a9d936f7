"""Runs of one recipe with other seeds, for results with a spread.

Run seed s moves every seed of the recipe by s: model init and data order of each training
stage, the RL prompt order and rollout streams, the data sets' sampling streams and the
evaluations' sampling streams. The held-out problems stay the same (they are drawn from the
held-out split with a fixed stream), so the runs differ only in what training and sampling
draw. Seed 0 is the recipe as written. Run s > 0 lives in `<workdir>/seed_<s>`.
"""

from __future__ import annotations

import dataclasses
import os


def _is_seed(name: str) -> bool:
    return name == "seed" or name.endswith("_seed")


def seeded(cfg, seed: int):
    """`cfg` (a tree of config dataclasses) with every integer `seed` / `*_seed` field + `seed`."""
    if seed == 0:
        return cfg
    changes = {}
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[field.name] = seeded(value, seed)
        elif _is_seed(field.name) and isinstance(value, int) and not isinstance(value, bool):
            changes[field.name] = value + seed
    return dataclasses.replace(cfg, **changes)


def seed_workdir(workdir: str, seed: int) -> str:
    """Where run `seed` of a recipe lives: the workdir itself for seed 0 (so a one-seed run and
    the README's command share it), `<workdir>/seed_<s>` for the others."""
    return workdir if seed == 0 else os.path.join(workdir, f"seed_{seed}")
