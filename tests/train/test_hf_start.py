"""`hf_checkpoint`: what a run started from a Hugging Face directory takes from it (model,
starting params on the mesh, tokenizer), and the mistakes it refuses with a message naming the
field (r1jax/train/hf_start.py, r1jax/recipe/hf_stages.py). Checkpoints: tests/hf_checkpoints.py.
"""

import dataclasses
import os

import jax
import numpy as np
import pytest

from experiments.cli import parse_args
from r1jax import models
from r1jax.config import tiny
from r1jax.data import load_tokenizer
from r1jax.interop import hf
from r1jax.models import qwen2
from r1jax.models.llama import LlamaConfig
from r1jax.models.qwen2 import Qwen2Config
from r1jax.recipe.hf_stages import check_checkpoint_starts
from r1jax.rl.grpo_stage import RLConfig
from r1jax.sharding import MeshConfig, make_mesh, param_shardings
from r1jax.train.checkpoint import abstract_with_shardings, initial_params
from r1jax.train.experiment import ExperimentConfig, apply_overrides, load_config
from r1jax.train.hf_start import start_from_hf
from tests.hf_checkpoints import build_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIPELINE = os.path.join(ROOT, "configs/r1_pipeline_tiny.py")


@pytest.fixture
def qwen2_dir(hf_checkpoint_dirs):
    return hf_checkpoint_dirs["qwen2"]


def test_the_run_takes_model_params_and_tokenizer_from_the_directory(qwen2_dir):
    recipe = ExperimentConfig(model=qwen2.tiny(param_dtype="bfloat16", num_layers=5))
    cfg = start_from_hf(dataclasses.replace(recipe, hf_checkpoint=qwen2_dir))
    assert isinstance(cfg.model, Qwen2Config)
    # Shapes from config.json (2 layers, 16 rows past the tokenizer's), run options kept.
    rows = load_tokenizer(qwen2_dir).vocab_size + 16
    assert (cfg.model.num_layers, cfg.model.vocab_size, cfg.model.param_dtype) == (2, rows, "bfloat16")
    assert cfg.model == hf.read_model_config(qwen2_dir, param_dtype="bfloat16", scan_layers=False)
    assert cfg.train.init_from == qwen2_dir and cfg.data.tokenizer_path == qwen2_dir
    assert start_from_hf(cfg) == cfg  # library entry points resolve again: nothing changes
    assert start_from_hf(recipe) is recipe  # no checkpoint named: untouched


def test_pipeline_stages_and_a_grpo_run_resolve(hf_checkpoint_dirs):
    cfg = apply_overrides(load_config(PIPELINE + ":runlocal"), [
        f"base.hf_checkpoint={hf_checkpoint_dirs['qwen2']}",
        f"student_base.hf_checkpoint={hf_checkpoint_dirs['llama']}"])
    cfg = start_from_hf(cfg)
    assert isinstance(cfg.base.model, Qwen2Config) and isinstance(cfg.student_base.model, LlamaConfig)
    assert cfg.cold_start.model == load_config(PIPELINE + ":runlocal").cold_start.model  # untouched
    check_checkpoint_starts(cfg)  # the two share one tokenizer
    rl = start_from_hf(RLConfig(hf_checkpoint=hf_checkpoint_dirs["qwen2"]))
    assert rl.train.init_from == hf_checkpoint_dirs["qwen2"]


def test_params_load_onto_the_mesh_as_saved(qwen2_dir):
    model_cfg = hf.read_model_config(qwen2_dir)
    mesh = make_mesh(MeshConfig())
    abstract = abstract_with_shardings(models.abstract_params(model_cfg),
                                       param_shardings(model_cfg, mesh))
    params = initial_params(qwen2_dir, model_cfg, abstract)
    _, expected = hf.load_checkpoint(qwen2_dir)
    for got, want, a in zip(jax.tree.leaves(params), jax.tree.leaves(expected),
                            jax.tree.leaves(abstract)):
        assert got.sharding == a.sharding
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert float(np.abs(np.asarray(jax.tree.leaves(params)[0])).max()) > 0.01  # not zeros
    with pytest.raises(ValueError, match="holds a Qwen2Config that is not the run's model.*"
                                         "num_layers: 3 vs 2.*start from it with hf_checkpoint="):
        initial_params(qwen2_dir, model_cfg.replace(num_layers=3), abstract)


def cli(*overrides, recipe="configs/sft_tiny.py:runlocal"):
    return parse_args(["--config", os.path.join(ROOT, recipe), "--workdir", "/tmp/unused",
                       *overrides])[1]


def test_command_line_overrides_that_contradict_the_checkpoint_are_refused(qwen2_dir):
    start = f"--config.hf_checkpoint={qwen2_dir}"
    ok = cli(start, "--config.model.hidden_size=64", "--config.model.param_dtype=bfloat16")
    assert ok.model.hidden_size == 64 and ok.model.param_dtype == "bfloat16"
    cases = [
        ((start, "--config.model.hidden_size=96"),
         f"--config.model.hidden_size=96 contradicts --config.hf_checkpoint={qwen2_dir}: its "
         "config.json gives hidden_size=64"),
        ((start, "--config.model.n_routed_experts=4", "--config.model.n_group=4"),
         "--config.model.n_group contradicts .*Qwen2Config, which has no field 'n_group'"),
        ((start, "--config.data.tokenizer_path=/other"),
         "--config.data.tokenizer_path=/other contradicts .*tokenizer"),
        (("--config.hf_checkpoint=/no/such/dir",), "hf_checkpoint=/no/such/dir: no such directory"),
        ((f"--config.hf_checkpoint={os.path.dirname(qwen2_dir)}",), "no config.json at"),
    ]
    for overrides, message in cases:
        with pytest.raises(SystemExit, match=message):
            cli(*overrides)
    with pytest.raises(SystemExit, match="base.model.hidden_size=96 contradicts"):
        cli(f"--config.base.hf_checkpoint={qwen2_dir}", "--config.base.model.hidden_size=96",
            recipe="configs/r1_pipeline_tiny.py:runlocal")


def test_pipeline_refuses_checkpoints_it_cannot_use(hf_checkpoint_dirs, tmp_path):
    recipe = load_config(PIPELINE + ":runlocal")

    def resolved(*overrides):
        return start_from_hf(apply_overrides(recipe, list(overrides)))

    with pytest.raises(ValueError, match="--config.r1_zero.hf_checkpoint=.*only the pretraining "
                                         "stages \\(base, student_base\\).*starts from base"):
        check_checkpoint_starts(resolved(f"r1_zero.hf_checkpoint={hf_checkpoint_dirs['qwen2']}"))
    with pytest.raises(ValueError, match="brings its own tokenizer, but base trains the embedded "
                                         "one.*--config.base.hf_checkpoint"):
        check_checkpoint_starts(resolved(f"student_base.hf_checkpoint={hf_checkpoint_dirs['llama']}"))
    other = build_checkpoint(tmp_path / "other", "llama", tokenizer_vocab=300)  # its own vocabulary
    with pytest.raises(ValueError, match="its vocabulary is not that of base's tokenizer.*vocab_size "
                                         "3[0-9][0-9] vs 300.*needs its teacher's vocabulary"):
        check_checkpoint_starts(resolved(f"base.hf_checkpoint={hf_checkpoint_dirs['qwen2']}",
                                         f"student_base.hf_checkpoint={other}"))
    # A teacher pretrained with the student's tokenizer is fine.
    check_checkpoint_starts(resolved(f"base.data.tokenizer_path={hf_checkpoint_dirs['qwen2']}",
                                     f"student_base.hf_checkpoint={hf_checkpoint_dirs['llama']}"))


def test_a_deepseek_v3_checkpoint_gives_the_model_load_checkpoint_gives(tmp_path):
    """config.json alone would declare an MTP module that transformers does not save: the
    resolved model is the loaded one, read from the tensor names without loading weights."""
    import json as json_lib

    from tests.hf_reference import build_hf_model

    build_hf_model(seed=3).save_pretrained(tmp_path)
    config = json_lib.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json_lib.dumps({**config, "num_nextn_predict_layers": 1}))
    cfg = start_from_hf(ExperimentConfig(hf_checkpoint=str(tmp_path)))
    with pytest.warns(UserWarning, match="declares 1 MTP modules but the checkpoint holds 0"):
        loaded, _ = hf.load_checkpoint(str(tmp_path))
    # init_std and scan_layers are run options: the config's (tiny's) are kept.
    assert cfg.model == loaded.replace(init_std=tiny().init_std, scan_layers=tiny().scan_layers)
    assert loaded.num_mtp_modules == 0 and loaded.n_routed_experts == 8


@pytest.mark.slow  # a subprocess with 4 simulated devices
def test_params_are_sharded_over_a_multi_device_mesh(qwen2_dir):
    from tests.devices import run_with_devices

    result = run_with_devices(os.path.join(ROOT, "tests/train/hf_params_multidevice.py"), 4,
                              qwen2_dir, timeout=600, env={"JAX_PLATFORMS": "cpu"})
    assert result["devices"] == 4 and result["max_diff"] == 0.0 and result["restored_diff"] == 0.0
    assert result["split"] >= result["leaves"] // 2, result  # most weights split, not copied
