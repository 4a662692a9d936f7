"""Local JSONL / Parquet sources: good files load, bad ones fail naming the file and line."""

import json

import numpy as np
import pytest

from r1jax.data import pipeline, sources, tasks
from r1jax.data.tasks import arithmetic


def _write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_jsonl_with_completion_or_answer_feeds_sft_and_rl(tmp_path, tokenizer):
    path = _write_jsonl(tmp_path / "train.jsonl", [
        json.dumps({"prompt": "Compute 2+2.",
                    "completion": " <think> 2+2+0=4 </think> <answer> 4 </answer>"}),
        "",  # blank lines are allowed
        json.dumps({"prompt": "Compute 3+3.", "answer": 6, "source": "hand-written"}),
    ])
    examples = sources.file_dataset(path)
    assert len(examples) == 2
    assert examples[1]["answer"] == "6" and examples[1]["source"] == "hand-written"
    batch = pipeline.first_batches(pipeline.sft_batches(examples, tokenizer, seq_len=64, batch_size=2), 1)[0]
    completions = {tokenizer.decode(batch["targets"][r][batch["loss_mask"][r]]) for r in range(2)}
    assert completions == {" <think> 2+2+0=4 </think> <answer> 4 </answer>",
                           " <think> </think> <answer> 6 </answer>"}
    rl_batches = pipeline.rl_prompt_batches(examples, tokenizer, max_prompt_len=40, batch_size=2)
    rl = pipeline.first_batches(rl_batches, 1)[0]
    assert sorted(str(ex.get("answer")) for ex in rl["examples"]) == ["6", "None"]


@pytest.mark.parametrize("bad_line,message", [
    ('{"prompt": "x", "answer": ', "invalid JSON"),
    ('["prompt", "answer"]', "expected a JSON object"),
    ('{"answer": "1"}', "missing string field 'prompt'"),
    ('{"prompt": "x"}', "needs a 'completion' or an 'answer'"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, bad_line, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", [json.dumps({"prompt": "ok", "answer": "1"}), "", bad_line])
    with pytest.raises(ValueError, match=f"bad.jsonl:3: {message}"):
        sources.file_dataset(path)


def test_file_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl does not exist"):
        sources.file_dataset(str(tmp_path / "nope.jsonl"))
    csv = tmp_path / "data.csv"
    csv.write_text("prompt,answer\n")
    with pytest.raises(ValueError, match="use .jsonl or .parquet"):
        sources.file_dataset(str(csv))
    with pytest.raises(ValueError, match="no examples"):
        sources.file_dataset(_write_jsonl(tmp_path / "empty.jsonl", [""]))


def test_parquet_rows_load_and_errors_name_the_row(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet reading needs pyarrow, which is not installed")
    import pyarrow.parquet as pq

    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"prompt": ["Compute 1+1.", "Compute 2+5."], "answer": ["2", "7"]}), good)
    examples = sources.file_dataset([str(good)])
    assert [e["answer"] for e in examples] == ["2", "7"]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prompt": ["a", None], "answer": ["1", "2"]}), bad)
    with pytest.raises(ValueError, match="bad.parquet:row 1: missing string field 'prompt'"):
        sources.file_dataset(str(bad))


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pip install pyarrow"):
        sources.file_dataset(str(path))


def test_task_dataset_is_random_access_and_validates_early():
    ds = sources.task_dataset("arithmetic", seed=0, num_examples=10)
    assert len(ds) == 10 and ds[3] == ds[3] and ds[3] != ds[4]
    with pytest.raises(ValueError, match="unknown"):
        sources.task_dataset("chess", seed=0)
    assert np.all([e["task"] == "countdown" for e in sources.corpus_dataset(
        seed=0, num_documents=5, task_names=("countdown",))])


def test_heldout_problems_are_distinct_and_heldout():
    problems = sources.heldout_problems("arithmetic", num_problems=30, max_digits=2)
    assert len({p["prompt"] for p in problems}) == 30
    assert all(tasks.problem_split(arithmetic.problem_key(p)) == tasks.HELDOUT for p in problems)
    with pytest.raises(ValueError, match="distinct held-out arithmetic problems"):
        sources.heldout_problems("arithmetic", num_problems=50, max_digits=1)  # only ~10 exist
