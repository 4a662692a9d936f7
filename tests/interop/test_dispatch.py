"""hf.py dispatches: config.json read once per load, `model_type` -> architecture module on load,
config type -> module on save; the architecture modules build on checkpoint_io, never on hf.py."""

import builtins
import json
import os

import jax
import pytest

from tests.test_import_layers import PACKAGE_ROOT, module_graph
from r1jax import config, models
from r1jax.interop import hf
from r1jax.models import llama, qwen2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"deepseek_v3": path, "qwen2": path, "llama": path} of tiny saved checkpoints."""
    out = {}
    for name, cfg in (("deepseek_v3", config.tiny(num_mtp_modules=0)), ("qwen2", qwen2.tiny()),
                      ("llama", llama.tiny())):
        out[name] = tmp_path_factory.mktemp(name)
        hf.save_checkpoint(cfg, models.init(cfg, jax.random.key(0)), str(out[name]))
    return out


@pytest.mark.parametrize("arch,config_type", [("deepseek_v3", config.ModelConfig),
                                              ("qwen2", qwen2.Qwen2Config),
                                              ("llama", llama.LlamaConfig)])
def test_config_json_is_read_once_per_load(checkpoints, monkeypatch, arch, config_type):
    opened, real_open = [], builtins.open

    def counting_open(file, *args, **kwargs):
        if os.path.basename(os.fspath(file)) == "config.json":
            opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    cfg, _ = hf.load_checkpoint(str(checkpoints[arch]))
    assert isinstance(cfg, config_type)
    assert len(opened) == 1, opened


def test_unknown_model_type_names_the_key(checkpoints, tmp_path):
    src = checkpoints["qwen2"]
    for fn in os.listdir(src):
        if fn != "config.json":
            os.link(src / fn, tmp_path / fn)
    hf_cfg = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**hf_cfg, "model_type": "mistral"}))
    with pytest.raises(ValueError, match=r"config.json: model_type='mistral' is not supported \(supported: "):
        hf.load_checkpoint(str(tmp_path))


@pytest.mark.parametrize("arch,name,tiny", [("qwen2", "Qwen2", qwen2.tiny),
                                            ("llama", "Llama", llama.tiny)])
def test_deepseek_only_options_are_rejected_for_dense_students(checkpoints, tmp_path, arch, name,
                                                               tiny):
    with pytest.raises(ValueError, match=f"keep_fp8=True is for DeepSeek-V3 checkpoints, not {name}"):
        hf.load_checkpoint(str(checkpoints[arch]), keep_fp8=True)
    cfg = tiny()
    with pytest.raises(ValueError, match=f"fp8=True writes the DeepSeek-V3 release format; {name}"):
        hf.save_checkpoint(cfg, models.init(cfg, jax.random.key(0)), str(tmp_path), fp8=True)


def test_save_names_an_unknown_config_type_and_dtype(tmp_path):
    with pytest.raises(TypeError, match="no Hugging Face architecture for a dict"):
        hf.save_checkpoint({}, {}, str(tmp_path))
    cfg = config.tiny(num_mtp_modules=0)
    with pytest.raises(ValueError, match=r"dtype='float16': checkpoints are written in one of"):
        hf.save_checkpoint(cfg, models.init(cfg, jax.random.key(0)), str(tmp_path), dtype="float16")


def test_architecture_modules_build_on_checkpoint_io_not_on_hf():
    graph = module_graph(PACKAGE_ROOT, "r1jax")
    interop = [m for m in graph if m.startswith("r1jax.interop.")]
    assert [m for m in interop if "r1jax.interop.hf" in graph[m]] == []
    for arch in ("r1jax.interop.deepseek_v3", "r1jax.interop.dense"):
        assert "r1jax.interop.checkpoint_io" in graph[arch], arch
    for student in ("r1jax.interop.qwen2", "r1jax.interop.llama"):  # the dense decoder's tensors
        assert "r1jax.interop.dense" in graph[student], student
    assert {"r1jax.interop.deepseek_v3", "r1jax.interop.qwen2", "r1jax.interop.llama"} <= set(
        graph["r1jax.interop.hf"])
