"""Run with 4 simulated CPU devices (tests/train/test_hf_start.py): a HF checkpoint's params placed
on an fsdp x tensor mesh are sharded and equal to the file's; written as a stage checkpoint they
restore onto another mesh unchanged. Prints one RESULT line of JSON."""

import json
import sys
import tempfile

import jax
import numpy as np

from r1jax import models
from r1jax.interop import hf
from r1jax.sharding import MeshConfig, make_mesh, param_shardings
from r1jax.train.checkpoint import (abstract_with_shardings, initial_params, load_params,
                                    write_params_checkpoint)


def main(directory: str) -> None:
    model_cfg = hf.read_model_config(directory)
    mesh = make_mesh(MeshConfig(data=1, fsdp=2, tensor=2))
    abstract = abstract_with_shardings(models.abstract_params(model_cfg),
                                       param_shardings(model_cfg, mesh))
    params = initial_params(directory, model_cfg, abstract)
    _, expected = hf.load_checkpoint(directory)
    diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)))
    # A shard smaller than the whole array: the leaf is split over devices, not copied.
    split = sum(a.addressable_shards[0].data.size < a.size for a in jax.tree.leaves(params))
    with tempfile.TemporaryDirectory() as out:
        write_params_checkpoint(out, params)
        restored = load_params(model_cfg, out, mesh=MeshConfig(data=4))
        restored_diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                            for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)))
    print("RESULT " + json.dumps({"devices": jax.device_count(), "max_diff": diff, "split": split,
                                  "leaves": len(jax.tree.leaves(params)),
                                  "restored_diff": restored_diff}))


if __name__ == "__main__":
    main(sys.argv[1])
