"""The paper's tables in miniature, from the pipeline's eval.json.

- `stages`: the Nature paper's Table 2 (R1-Zero / Dev1 / Dev2 / Dev3 / R1, REFERENCE §4.1) with
  the base model in front; metrics as rows, stages as columns.
- `distill_vs_rl`: R1's Table 6 (REFERENCE §4.3): the same dense student trained with GRPO alone
  vs distilled from the final teacher, at matched student FLOPs; models as rows.
- `r1_zero_curve`: R1-Zero's training curves (Fig. 1 and the response-length figure): rollout
  accuracy, response length and the share of responses that check or revise, first vs last
  GRPO steps (r1jax/recipe/curves.py).
"""

from __future__ import annotations


from r1jax.eval.tables import format_table, mean_std
from r1jax.recipe.curves import curve_table

STAGE_COLUMNS = (("Base", "base"), ("R1-Zero", "r1_zero"), ("Dev1", "cold_start"),
                 ("Dev2", "reasoning_rl"), ("Dev3", "rejection_sft"), ("R1", "final_rl"))
DISTILL_ROWS = (("R1 (teacher, MoE-MLA)", "final_rl"), ("student base (dense)", "student_base"),
                ("student + GRPO (RL alone)", "student_rl"),
                ("student distilled: SFT on R1 samples", "student_sft"),
                ("student distilled: logit KD (forward KL, top-k)", "student_logit"))
TABLES = ("stages", "distill_vs_rl", "r1_zero_curve")


def _cons_key(runs: list[dict]) -> str:
    for results in runs:
        for entry in results.values():
            for key in entry:
                if key.startswith("cons@"):
                    return key
    return "cons@k"


def needed(table: str) -> tuple[str, ...]:
    if table == "stages":
        return tuple(stage for _, stage in STAGE_COLUMNS)
    if table == "distill_vs_rl":
        return tuple(stage for _, stage in DISTILL_ROWS)
    if table == "r1_zero_curve":
        return ("r1_zero",)
    raise ValueError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")


def cell(runs: list[dict], stage: str, metric: str, digits: str = ".1f") -> str | None:
    """A metric over the runs (seeds): the value for one run, `mean ± std` (sample standard
    deviation) for several; None where no run has it. `digits` formats both numbers."""
    values = [r[stage][metric] for r in runs if metric in r.get(stage, {})]
    if not values:
        return None
    if len(values) < len(runs):
        raise ValueError(f"{stage} {metric}: recorded by {len(values)} of {len(runs)} runs")
    return mean_std(values, digits)


def stages_table(runs: list[dict]) -> str:
    cons = _cons_key(runs)
    rows = []
    for metric in ("pass@1", cons, "response_length", "revisions"):
        row = {"held-out metric": metric}
        for column, stage in STAGE_COLUMNS:
            row[column] = cell(runs, stage, metric)
        if any(row[column] is not None for column, _ in STAGE_COLUMNS):
            rows.append(row)  # `revisions`: only tasks with revisable steps record it
    return format_table(rows, ["held-out metric", *(c for c, _ in STAGE_COLUMNS)])


def distill_vs_rl_table(runs: list[dict]) -> str:
    cons = _cons_key(runs)
    rows = []
    for name, stage in DISTILL_ROWS:
        student = stage != DISTILL_ROWS[0][1]  # the first row is the teacher
        # Three significant digits: KL and FLOPs span orders of magnitude; accuracies do not.
        rows.append({"model": name, "pass@1": cell(runs, stage, "pass@1"),
                     cons: cell(runs, stage, cons),
                     "KL to teacher (nats/token)": cell(runs, stage, "KL to teacher", ".3g"),
                     "student TFLOP": cell(runs, stage, "TFLOP", ".3g") if student else None})
    columns = ["model", "pass@1", cons, "KL to teacher (nats/token)", "student TFLOP"]
    table = format_table(rows, columns)
    return table if len(runs) == 1 else table.rstrip("\n") + "\n\n" + paired_table(runs, cons)


def paired_table(runs: list[dict], cons: str) -> str:
    """Each distilled student minus RL alone within the same seed (the seeds share nothing
    else, so the per-seed difference is what distillation adds): mean ± std, and the seeds where
    distillation came out ahead."""
    rl_stage = DISTILL_ROWS[2][1]
    rows = []
    for name, stage in DISTILL_ROWS[3:]:
        row = {"paired by seed": f"{name.split(': ')[-1]} - RL alone"}
        for metric in ("pass@1", cons):
            diffs = [r[stage][metric] - r[rl_stage][metric] for r in runs]
            row[f"{metric} difference"] = mean_std(diffs, "+.1f")
        wins = sum(r[stage]["pass@1"] > r[rl_stage]["pass@1"] for r in runs)
        row["seeds where distillation led on pass@1"] = f"{wins} of {len(runs)}"
        rows.append(row)
    return format_table(rows, ["paired by seed", "pass@1 difference", f"{cons} difference",
                               "seeds where distillation led on pass@1"])


def make_table(table: str, runs: dict | list[dict]) -> str:
    """The table of one pipeline's eval.json results, or of several runs (seeds) of it."""
    needed(table)  # validates the name
    runs = [runs] if isinstance(runs, dict) else list(runs)
    if table == "r1_zero_curve":
        return curve_table(runs)
    return stages_table(runs) if table == "stages" else distill_vs_rl_table(runs)


def title(table: str, cfg) -> str:
    """What the table's numbers are: the held-out set and sampling of its stages (a PipelineConfig),
    or for the curve table the rollouts of its GRPO stage."""
    if table == "r1_zero_curve":
        rl = cfg.r1_zero
        return (f"{rl.task} {dict(rl.task_kwargs)}: r1_zero's GRPO rollouts, {rl.prompts_per_step} "
                f"prompts x {rl.grpo.group_size} samples per step at T={rl.temperature}, "
                f"{rl.train.steps} steps")
    evals = {stage: getattr(cfg, stage).eval for stage in needed(table)}
    first = next(iter(evals.values()))
    same = all(e == first for e in evals.values())
    text = (f"{first.task} {dict(first.task_kwargs)}: held-out {first.num_problems} problems, "
            f"pass@1 over k={first.k} at T={first.temperature}, top-p={first.top_p}")
    return text if same else text + " (stages differ in their eval settings: see <stage>/eval.md)"
