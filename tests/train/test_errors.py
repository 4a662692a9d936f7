"""Bad inputs to the training core fail with errors that name the thing and the fix."""

import os
import types

import jax
import jax.numpy as jnp
import pytest

from r1jax.sharding import MeshConfig
from r1jax.train.checkpoint import Checkpointer, restore_params
from r1jax.train.experiment import ExperimentConfig, apply_overrides, load_config
from r1jax.train.supervised import check_batch_divisible

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_unknown_config_key_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown config key 'trian.steps'.*valid keys: \['data', 'hf_checkpoint', 'mesh'"):
        apply_overrides(ExperimentConfig(), ["--config.trian.steps=3"])
    with pytest.raises(ValueError, match=r"unknown config key 'stepz' in TrainConfig; valid keys: .*'steps'"):
        apply_overrides(ExperimentConfig(), ["--config.train.stepz=3"])


def test_override_types_are_checked_and_applied():
    cfg = apply_overrides(ExperimentConfig(), ["--config.train.steps=7", "--config.optim.lr=1e-3",
                                               "--config.model.q_lora_rank=None",
                                               "--config.train.async_checkpoint=false",
                                               '--config.data.task_kwargs=[["max_digits", 2]]'])
    assert (cfg.train.steps, cfg.optim.lr, cfg.model.q_lora_rank) == (7, 1e-3, None)
    assert cfg.train.async_checkpoint is False and cfg.data.task_kwargs == (("max_digits", 2),)
    with pytest.raises(ValueError, match=r"--config.train.steps='seven': expected int"):
        apply_overrides(ExperimentConfig(), ["--config.train.steps=seven"])
    with pytest.raises(ValueError, match="choose one of"):
        apply_overrides(ExperimentConfig(), ["--config.model.scoring_func=relu"])


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="configs/nope.py"):
        load_config("configs/nope.py:runlocal")


def test_batch_not_divisible_by_the_data_axes():
    mesh = types.SimpleNamespace(shape={"data": 4, "fsdp": 2, "expert": 1, "tensor": 1})
    cfg = apply_overrides(ExperimentConfig(), ["--config.data.batch_size=12"])
    with pytest.raises(ValueError, match=r"data.batch_size=12 is not divisible by the batch axes data\*fsdp\*expert = 8"):
        check_batch_divisible(cfg, mesh)


def test_mesh_that_does_not_fit_the_devices():
    with pytest.raises(ValueError, match=r"needs 16 devices, but 8 are available"):
        MeshConfig(data=4, fsdp=4).resolve(8)
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        MeshConfig(data=-1, fsdp=-1).resolve(8)


def test_missing_and_corrupt_checkpoints(tmp_path):
    state = {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(3)}
    ck = Checkpointer(str(tmp_path / "ck"), save_every=1, keep=2, async_save=False)
    ck.save(3, state, {"cursor": 1})
    ck.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 9 .*have \[3\]"):
        ck.restore(abstract, step=9)
    restored, data = ck.restore(abstract)
    assert float(restored["w"][1, 2]) == 5.0 and data == {"cursor": 1}
    # Truncate every data file of the step: restore must say which checkpoint is broken.
    for dirpath, _, files in os.walk(tmp_path / "ck" / "3" / "state"):
        for fn in files:
            with open(os.path.join(dirpath, fn), "wb") as f:
                f.write(b"\x00garbage")
    with pytest.raises(ValueError, match=r"ck/3 could not be restored"):
        ck.restore(abstract)
    ck.close()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        restore_params(str(tmp_path / "absent"), abstract)
