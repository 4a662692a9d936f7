"""Example sources as grain MapDatasets: the embedded tasks, the corpus, local JSONL/Parquet.

Every source yields dicts with at least `prompt` and one of `completion` / `answer`; other
fields (`reasoning`, `numbers`, `target`, ...) pass through to SFT formatting and to the RL
rewards. MapDatasets give random access, which makes shuffling, sharding and resuming exact.
"""

import json
import os
from typing import Any, Mapping, Sequence

import grain

from r1jax.data import corpus, tasks

DEFAULT_NUM_EXAMPLES = 1 << 20  # generated on demand, so size costs nothing


def task_dataset(
    task: str, *, seed: int, split: str = tasks.TRAIN, num_examples: int = DEFAULT_NUM_EXAMPLES,
    **task_kwargs,
) -> grain.MapDataset:
    """`num_examples` examples of `task` (e.g. "countdown") from stream `seed` in `split`."""
    tasks.generate(task, seed, 0, split=split, **task_kwargs)  # fail now on a bad name or knob
    return grain.MapDataset.range(num_examples).map(
        lambda index: tasks.generate(task, seed, int(index), split=split, **task_kwargs))


def heldout_problems(task: str, *, num_problems: int, seed: int = 0, **task_kwargs) -> list[dict]:
    """`num_problems` distinct held-out problems of `task`, for evaluation (pass@k, accuracy)."""
    return distinct_problems(task, num_problems=num_problems, seed=seed, split=tasks.HELDOUT,
                             **task_kwargs)


def distinct_problems(task: str, *, num_problems: int, seed: int, split: str, **task_kwargs) -> list[dict]:
    """The first `num_problems` distinct problems of stream `seed` in `split`.

    Index-generated streams can repeat a problem; an evaluation set should not count one twice,
    and a rejection-sampling set should not sample one twice.
    """
    examples, seen = [], set()
    for index in range(50 * num_problems):  # bounded: tiny difficulty settings have few problems
        example = tasks.generate(task, seed, index, split=split, **task_kwargs)
        if example["prompt"] not in seen:
            seen.add(example["prompt"])
            examples.append(example)
            if len(examples) == num_problems:
                return examples
    where = "held-out" if split == tasks.HELDOUT else split
    raise ValueError(f"only {len(examples)} distinct {where} {task} problems exist for "
                     f"{task_kwargs}; ask for fewer or raise the difficulty")


def corpus_dataset(
    *, seed: int, num_documents: int = DEFAULT_NUM_EXAMPLES, **corpus_kwargs,
) -> grain.MapDataset:
    """The pretraining corpus (clean and noisy worked solutions) as task examples."""
    corpus.corpus_example(seed, 0, **corpus_kwargs)  # fail now on bad arguments
    return grain.MapDataset.range(num_documents).map(
        lambda index: corpus.corpus_example(seed, int(index), **corpus_kwargs))


def check_record(record: Any, where: str) -> dict:
    """Validates one file record; `where` ("file:line") is named in every error."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a JSON object with 'prompt' and 'completion' or "
                         f"'answer', got {type(record).__name__}")
    if not isinstance(record.get("prompt"), str):
        raise ValueError(f"{where}: missing string field 'prompt' (fields: {sorted(record)})")
    if record.get("completion") is None and record.get("answer") is None:
        raise ValueError(f"{where}: needs a 'completion' or an 'answer' field (fields: {sorted(record)})")
    example = dict(record)
    if example.get("answer") is not None:
        example["answer"] = str(example["answer"])  # JSON numbers become the strings rewards parse
    return example


def _not_utf8_error(path: str) -> ValueError:
    """Where the first byte of `path` that is not UTF-8 sits, as an error naming the fix."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_number = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        return ValueError(
            f"{path}:{line_number}: byte 0x{data[e.start]:02x} at column {column} (file offset "
            f"{e.start}) is not UTF-8 ({e.reason}); "
            "JSONL files must be UTF-8: re-encode the file (e.g. iconv -f latin1 -t utf-8)")
    return ValueError(f"{path}: the file changed while it was read; read it again")


def read_jsonl(path: str) -> list[dict]:
    """All records of a JSONL file; blank lines are skipped, anything else must be valid."""
    examples = []
    try:
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_number}: invalid JSON ({e.msg} at column "
                                     f"{e.colno}); fix or delete that line") from None
                examples.append(check_record(record, f"{path}:{line_number}"))
    except UnicodeDecodeError:
        # The decoder reports offsets within its read-ahead chunk: locate the byte in the file.
        raise _not_utf8_error(path) from None
    return examples


def read_parquet(path: str) -> list[dict]:
    """All rows of a Parquet file (needs pyarrow); errors name the file and the row number."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"reading {path} needs pyarrow, which is not installed: "
                          "pip install pyarrow") from None
    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as e:  # pyarrow's messages omit the path
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e}); "
                         "check that the file is complete or write it again") from e
    return [check_record(row, f"{path}:row {i}") for i, row in enumerate(rows)]


def file_dataset(paths: str | Sequence[str]) -> grain.MapDataset:
    """Examples from local `.jsonl` and `.parquet` files, read eagerly so errors surface now."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise ValueError("paths is empty; give at least one .jsonl or .parquet file")
    examples = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"data file {path} does not exist")
        if path.endswith(".jsonl"):
            examples.extend(read_jsonl(path))
        elif path.endswith(".parquet"):
            examples.extend(read_parquet(path))
        else:
            raise ValueError(f"{path}: unknown file type; use .jsonl or .parquet")
    if not examples:
        raise ValueError(f"no examples in {paths}")
    return grain.MapDataset.source(examples)
