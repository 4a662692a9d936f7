"""Orbax checkpoints of TrainState plus the data iterator state.

Async saves every N steps, keep K, a forced save on SIGTERM/Ctrl-C (the loop calls
`save(..., force=True)`), and restore onto any mesh: the abstract target carries the new
shardings and orbax reshards while reading. orbax writes a step into a temporary directory and
renames it when complete, so a process killed mid-save leaves the previous steps intact; a save
that fails (a full disk, a read-only directory) is reported with the step that is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import jax
import numpy as np
import orbax.checkpoint as ocp


# Where every stage's checkpoint keeps its params: the loop saves {"train": TrainState, ...}.
PARAMS_PATH = ("train", "params")


class Checkpointer:
    def __init__(self, directory: str, *, save_every: int, keep: int, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self._closed = False
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every,
                                               enable_async_checkpointing=async_save, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state: dict, *, force: bool = False) -> bool:
        with self._reporting_write_errors(step):
            return self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)

    @contextlib.contextmanager
    def _reporting_write_errors(self, step: int | None):
        try:
            yield
        except Exception as e:  # tensorstore reports a full disk as ValueError(RESOURCE_EXHAUSTED)
            kept = self.manager.latest_step()
            what = f"checkpoint step {step}" if step is not None else "a checkpoint"
            raise OSError(f"could not write {what} to {self.directory} ({e}); the last complete "
                          f"checkpoint is step {kept}: free space or fix the directory, then rerun "
                          "to resume from it") from e

    def restore(self, abstract_state, step: int | None = None):
        """(state, data_state) at `step` (default latest), or None if there is no checkpoint.
        `abstract_state` is a tree of jax.ShapeDtypeStruct with the target shardings."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            return None
        abstract_state = on_default_device(abstract_state)
        if step not in self.manager.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} "
                                    f"(have {sorted(self.manager.all_steps())})")
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for truncated or foreign files
            raise ValueError(f"checkpoint {self.directory}/{step} could not be restored "
                             f"({type(e).__name__}: {e}); if its files are damaged, delete that "
                             "step's directory to fall back to an earlier one; if the model or "
                             "optimizer changed since it was saved, resume with the config in "
                             "config.json") from e
        return out["state"], out["data"]

    def wait(self) -> None:
        with self._reporting_write_errors(None):
            self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release the manager; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self.wait()
        self.manager.close()


def on_default_device(abstract_tree):
    """Give abstract leaves without a sharding the first device's (single-device restores)."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda a: a if getattr(a, "sharding", None) is not None else
                        jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_tree)


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_tree, shardings)


def restore_params(directory: str, abstract_params, step: int | None = None,
                   path: tuple[str, ...] = PARAMS_PATH):
    """Only the params of a checkpoint (to start the next stage of a pipeline). `path` locates
    them in the saved state (the loop's layout by default)."""
    directory = os.path.abspath(directory)
    abstract_params = on_default_device(abstract_params)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    manager = ocp.CheckpointManager(directory, item_names=("state", "data"))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint steps in {directory}")
    item = abstract_params
    for key in reversed(path):
        item = {key: item}
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=item,
            restore_args=jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), item),
            partial_restore=True)))
    manager.close()
    out = restored["state"]
    for key in path:
        out = out[key]
    return out


def load_params(model_cfg, directory: str, *, mesh=None, path: tuple[str, ...] = PARAMS_PATH,
                step: int | None = None):
    """The params of `model_cfg` from a checkpoint directory, sharded over `mesh` (a
    MeshConfig; default: all devices on the data axis)."""
    from r1jax import models
    from r1jax.sharding import MeshConfig, make_mesh, param_shardings

    shardings = param_shardings(model_cfg, make_mesh(mesh or MeshConfig()))
    abstract = abstract_with_shardings(models.abstract_params(model_cfg), shardings)
    return restore_params(directory, abstract, step, path)


def latest_step(directory: str) -> int | None:
    """The newest checkpointed step in `directory` (None if it has none)."""
    if not os.path.isdir(directory):
        return None
    manager = ocp.CheckpointManager(os.path.abspath(directory), item_names=("state", "data"))
    step = manager.latest_step()
    manager.close()
    return step


def is_hf_checkpoint(directory: str) -> bool:
    """A Hugging Face checkpoint directory (config.json + safetensors), not an orbax one."""
    return os.path.isfile(os.path.join(directory, "config.json")) and any(
        name.endswith(".safetensors") for name in os.listdir(directory))


def hf_params(directory: str, model_cfg, abstract_params):
    """The safetensors of HF checkpoint `directory` as `model_cfg`'s params, placed on the
    shardings of `abstract_params` (every process reads the files whole and keeps its shards)."""
    from r1jax.interop import hf
    from r1jax.sharding import global_array

    options = {name: getattr(model_cfg, name) for name in hf.RUN_OPTIONS if hasattr(model_cfg, name)}
    cfg, params = hf.load_checkpoint(directory, **options)
    if cfg != model_cfg:
        theirs, ours = dataclasses.asdict(cfg), dataclasses.asdict(model_cfg)
        differ = [f"{k}: {ours.get(k)!r} vs {theirs[k]!r}" for k in theirs if ours.get(k) != theirs[k]]
        raise ValueError(f"{directory} holds a {type(cfg).__name__} that is not the run's model "
                         f"{type(model_cfg).__name__} ({'; '.join(differ) or 'another class'}): "
                         f"start from it with hf_checkpoint={directory}, which takes the model "
                         "from its config.json")
    return jax.tree.map(lambda x, a: global_array(np.asarray(x), a.sharding), params,
                        abstract_params)


def initial_params(directory: str, model_cfg, abstract_params):
    """The params a run starts from (`train.init_from`): an orbax checkpoint directory's (a
    previous stage), or a Hugging Face checkpoint directory's, on `abstract_params`' shardings."""
    if os.path.isdir(directory) and is_hf_checkpoint(directory):
        return hf_params(directory, model_cfg, abstract_params)
    return restore_params(directory, abstract_params, path=PARAMS_PATH)


def write_params_checkpoint(directory: str, params, step: int = 0) -> None:
    """Save `params` alone where the loop keeps a stage's params (("train", "params")), so every
    reader of stage checkpoints (`load_params`, `train.init_from`) takes them as a stage's."""
    ckpt = Checkpointer(directory, save_every=1, keep=1, async_save=False)
    try:
        ckpt.save(step, {PARAMS_PATH[0]: {PARAMS_PATH[1]: params}}, {}, force=True)
    finally:
        ckpt.close()
