"""A pipeline stage as a Hugging Face directory: config.json + safetensors that `transformers`
loads (DeepseekV3ForCausalLM for the teacher, the student's class for a student), with the
stage's tokenizer beside them, so `experiments/evaluate.py` and other tools read one format.

Nothing in the pipeline's workdir is written: the stage's saved config is compared with the
recipe's first (a changed model shape is refused, naming the fields), then its final params are
read from its checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil

from r1jax.data.hf_tokenizer import TOKENIZER_FILE
from r1jax.data.tokenizer_files import SENTENCEPIECE_FILE
from r1jax.interop import hf
from r1jax.recipe import stages as table
from r1jax.recipe.config import PipelineConfig
from r1jax.train.checkpoint import latest_step, load_params
from r1jax.train.experiment import to_dict
from r1jax.train.hf_start import start_from_hf
from r1jax.train.workdir import check_resume

# What a checkpoint's tokenizer is made of (the files transformers' save_pretrained writes).
TOKENIZER_FILES = (TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


def stage_model(cfg: PipelineConfig, name: str, stages=table.STAGES):
    """A pretraining stage's own model config; otherwise that of the stage it starts from
    (training) or of the policy it samples (data)."""
    s = table.stage(name, stages)
    if s.kind == table.PRETRAIN:
        return getattr(cfg, name).model
    return stage_model(cfg, s.starts_from or s.teacher, stages)


def tokenizer_file(cfg: PipelineConfig, workdir: str, stages=table.STAGES) -> str:
    """The tokenizer every stage shares: the one the first stage is given (a checkpoint's), else
    the sentencepiece model that stage trained."""
    source = next(s.name for s in stages if s.tokenizer is None)
    d = getattr(cfg, source).data
    return d.tokenizer_path or os.path.join(workdir, source,
                                            f"tokenizer_v{d.vocab_size}_s{d.seed}.model")


def copy_tokenizer(source: str, out_dir: str) -> None:
    """The tokenizer at `source` into `out_dir`: a checkpoint's tokenizer files as they are, the
    embedded sentencepiece model as tokenizer.model."""
    directory = os.path.dirname(source) if os.path.basename(source) == TOKENIZER_FILE else source
    if not os.path.isdir(directory):
        shutil.copyfile(source, os.path.join(out_dir, SENTENCEPIECE_FILE))
        return
    for name in TOKENIZER_FILES:
        if os.path.exists(os.path.join(directory, name)):
            shutil.copyfile(os.path.join(directory, name), os.path.join(out_dir, name))


def export_stage(cfg: PipelineConfig, workdir: str, name: str, out_dir: str, *,
                 dtype: str = "float32") -> str:
    """Write stage `name`'s final params (and the tokenizer) to `out_dir` as a HF directory."""
    cfg = start_from_hf(cfg)  # a stage imported from a checkpoint has that checkpoint's model
    if table.stage(name).is_data:
        raise ValueError(f"stage {name!r} writes a data set, not a model; export one of "
                         f"{[s.name for s in table.STAGES if not s.is_data]}")
    model_cfg = stage_model(cfg, name)
    stage_dir = os.path.join(workdir, name)
    checkpoints = os.path.join(stage_dir, "checkpoints")
    if latest_step(checkpoints) is None:
        raise FileNotFoundError(f"stage {name!r} has no checkpoint in {checkpoints}: run it first "
                                f"(experiments/r1_pipeline.py --stages {name})")
    check_resume(stage_dir, {"model": to_dict(model_cfg)}, pinned=("model",))
    tok_source = tokenizer_file(cfg, workdir)
    if not os.path.exists(tok_source):
        raise FileNotFoundError(f"the pipeline's tokenizer {tok_source} is missing")
    params = load_params(model_cfg, checkpoints)
    os.makedirs(out_dir, exist_ok=True)
    hf.save_checkpoint(model_cfg, params, out_dir, dtype=dtype)
    copy_tokenizer(tok_source, out_dir)
    with open(os.path.join(out_dir, "r1jax_stage.json"), "w") as f:
        json.dump({"pipeline": cfg.name, "stage": name, "workdir": os.path.abspath(workdir),
                   "step": latest_step(checkpoints)}, f, indent=2)
    return out_dir
