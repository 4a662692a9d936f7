"""Evaluate a Hugging Face checkpoint directory on a held-out set: the engine behind
`experiments/evaluate.py`.

The directory is what `transformers` saves (config.json + safetensors) with its tokenizer, or what
`experiments/export.py` writes for a pipeline stage (the same, with the embedded sentencepiece
model as its tokenizer). The problems are an embedded task's held-out set (its name, e.g.
`arithmetic`) or a data file.
"""

from __future__ import annotations

import dataclasses
import os

from r1jax import data as rdata
from r1jax.data import tasks
from r1jax.eval.evaluate import EvalConfig, heldout_set, sample_problems, summarize
from r1jax.eval.report import write_report
from r1jax.interop import hf
from r1jax.sharding import MeshConfig, make_mesh

@dataclasses.dataclass(frozen=True)
class CheckpointEvalConfig:
    """What `experiments/evaluate.py` runs; every field can be set with --config.<path>=value."""

    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    pass_k: tuple = (1,)  # the k of each unbiased pass@k reported (each <= eval.k)

    def __post_init__(self):
        bad = [k for k in self.pass_k if not isinstance(k, int) or not 1 <= k <= self.eval.k]
        if bad:
            raise ValueError(f"pass_k={self.pass_k}: each k must be an integer in [1, eval.k="
                             f"{self.eval.k}] (draw more samples with --k); bad: {bad}")


def load_model(directory: str):
    """(model config, params, tokenizer) of a checkpoint directory."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    model_cfg, params = hf.load_checkpoint(directory)
    return model_cfg, params, rdata.load_tokenizer(directory)


def problems_of(data: str, cfg: EvalConfig, *, all_rows: bool = False) -> tuple[list[dict], str]:
    """(problems, what they are): an embedded task's first `cfg.num_problems` held-out problems,
    or a data file's (JSONL, Parquet, a save_to_disk directory; `cfg.fields` maps its layout)
    first `cfg.num_problems` rows, or all of them with `all_rows`."""
    if data not in tasks.TASKS and not rdata.is_data_path(data):
        raise FileNotFoundError(f"--data {data}: no such file, and not an embedded task "
                                f"({', '.join(tasks.TASKS)})")
    ev = dataclasses.replace(cfg, task=data)
    if data in tasks.TASKS:
        return heldout_set(ev), f"{data} {dict(cfg.task_kwargs)} held-out (embedded)"
    if not os.path.exists(data):
        raise FileNotFoundError(f"--data {data}: no such file or directory")
    if all_rows:
        ev = dataclasses.replace(ev, num_problems=len(rdata.file_dataset([data], cfg.fields)))
    return heldout_set(ev), f"{data} ({ev.num_problems} problems)"


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A loaded checkpoint and the problems to evaluate it on (every input checked)."""

    directory: str
    model_cfg: object
    params: dict
    tok: object
    problems: list
    data: str  # what the problems are, in words


def prepare(directory: str, data: str, cfg: CheckpointEvalConfig, *,
            all_rows: bool = False) -> Evaluation:
    """Read the problems and the checkpoint; bad input raises FileNotFoundError or ValueError
    naming the file or field."""
    problems, what = problems_of(data, cfg.eval, all_rows=all_rows)
    model_cfg, params, tok = load_model(directory)
    return Evaluation(directory, model_cfg, params, tok, problems, what)


def run(ev: Evaluation, out_dir: str, cfg: CheckpointEvalConfig, *, progress: bool = True) -> dict:
    """Sample k answers per problem, verify them, and write the report to `out_dir`
    (r1jax/eval/report.py). Returns the summary."""
    records = sample_problems(ev.model_cfg, ev.params, ev.tok, ev.problems, cfg.eval,
                              mesh=make_mesh(cfg.mesh), progress=progress)
    summary = summarize(records, cfg.pass_k)
    e = cfg.eval
    about = {"checkpoint": os.path.abspath(ev.directory), "data": ev.data,
             "sampling": f"k={e.k}, T={e.temperature}, top-p={e.top_p}, "
                         f"max_new_tokens={e.max_new_tokens}, seed={e.seed}"}
    name = os.path.basename(os.path.abspath(ev.directory))
    write_report(out_dir, records, summary, title=f"{name} on {ev.data}", about=about)
    return summary
