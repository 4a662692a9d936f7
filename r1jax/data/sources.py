"""Example sources as grain MapDatasets: the embedded tasks, the corpus, users' data on disk.

Every source yields dicts with at least `prompt` and one of `completion` / `answer`; other
fields (`reasoning`, `numbers`, `target`, ...) pass through to SFT formatting and to the RL
rewards. MapDatasets give random access, which makes shuffling, sharding and resuming exact.
Data on disk is JSONL, Parquet or a directory written by `datasets`' save_to_disk, in r1jax's
own layout or the GSM8K, MATH or a mapped one (r1jax/data/layouts.py).
"""

import json
import os
import warnings
from typing import Any, Mapping, Sequence

import grain

from r1jax.data import corpus, layouts, tasks

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


def jsonl_rows(path: str) -> list[tuple[str, Any]]:
    """("file:line", record) for every record of a JSONL file; blank lines are skipped, anything
    else must be valid JSON."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append((f"{path}:{line_number}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_number}: invalid JSON ({e.msg} at column "
                                     f"{e.colno}); fix or delete that line") from None
    except UnicodeDecodeError:
        # The decoder reports offsets within its read-ahead chunk: locate the byte in the file.
        raise _not_utf8_error(path) from None
    return rows


def parquet_rows(path: str) -> list[tuple[str, dict]]:
    """("file:row i", row) for every row of a Parquet file (needs pyarrow)."""
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
    return [(f"{path}:row {i}", row) for i, row in enumerate(rows)]


def saved_dataset_rows(path: str) -> list[tuple[str, dict]]:
    """("dir:row i", row) for every row of a data set written by `datasets`' save_to_disk: a
    Dataset, or a DatasetDict with a single split (name the split's folder otherwise)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(f"reading {path} needs datasets, which is not installed: "
                          "pip install datasets (pinned in requirements.txt)") from None
    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError as e:  # datasets' message: "...neither a Dataset directory nor..."
        raise ValueError(f"{path}: a directory, but not a data set written by datasets' "
                         f"save_to_disk ({e}); give that directory, or the .jsonl/.parquet files "
                         "themselves") from None
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise ValueError(f"{path}: a DatasetDict with splits {sorted(loaded)}; give one "
                             f"split's directory, e.g. {os.path.join(path, sorted(loaded)[0])}")
        (split, loaded), = loaded.items()
        path = os.path.join(path, split)
    return [(f"{path}:row {i}", row) for i, row in enumerate(loaded.to_list())]


def _rows_of(path: str) -> list[tuple[str, Any]]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file {path} does not exist")
    if os.path.isdir(path):
        return saved_dataset_rows(path)
    if path.endswith(".jsonl"):
        return jsonl_rows(path)
    if path.endswith(".parquet"):
        return parquet_rows(path)
    raise ValueError(f"{path}: unknown file type; use .jsonl or .parquet, or a directory written "
                     "by datasets' save_to_disk")


def read_examples(path: str, fields: layouts.FieldMap = layouts.FieldMap()) -> list[dict]:
    """The examples of one data file or saved data set, in its layout (r1jax/data/layouts.py).

    Rows whose reference answer cannot be read are left out with one warning that counts them
    and names the first; a file where no row is left is an error, as is any other bad row.
    """
    rows = _rows_of(path)
    if not rows:
        return []
    first_where, first_row = rows[0]
    if not isinstance(first_row, Mapping):
        check_record(first_row, first_where)  # raises: "expected a JSON object ..."
    layout = layouts.recognise_layout(first_row, path, fields)
    make = layouts.record_maker(layout, fields, check_record)
    examples, unreadable = [], []
    for where, row in rows:
        try:
            examples.append(make(row, where))
        except layouts.UnreadableReference as e:
            unreadable.append(f"{where}: {e}")
    if unreadable and not examples:
        raise ValueError(f"{path}: no row has a readable reference answer ({layout} layout; "
                         f"first: {unreadable[0]}); check the layout or map the fields")
    if unreadable:
        warnings.warn(f"{path}: skipped {len(unreadable)} of {len(rows)} rows whose reference "
                      f"answer cannot be read ({layout} layout; first: {unreadable[0]})",
                      stacklevel=3)
    return examples


def file_dataset(paths: str | Sequence[str],
                 fields: layouts.FieldMap = layouts.FieldMap()) -> grain.MapDataset:
    """Examples from local `.jsonl` and `.parquet` files and directories written by `datasets`'
    save_to_disk, read eagerly so errors surface now; `fields` maps a layout that is not
    recognised by its field names (r1jax/data/layouts.py)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise ValueError("paths is empty; give at least one .jsonl or .parquet file or a saved "
                         "data set's directory")
    examples = []
    for path in paths:
        examples.extend(read_examples(path, fields))
    if not examples:
        raise ValueError(f"no examples in {paths}")
    return grain.MapDataset.source(examples)


def is_data_path(spec: str) -> bool:
    """Whether a `task` setting names data on disk (a file or a saved data set) rather than a
    generated task."""
    return spec.endswith((".jsonl", ".parquet")) or os.path.isdir(spec)


def examples_of(task: str, *, seed: int, split: str = tasks.TRAIN,
                fields: layouts.FieldMap = layouts.FieldMap(), **task_kwargs) -> grain.MapDataset:
    """The examples a `task` setting names: a generated task's stream, or data on disk (`fields`
    maps its layout; the file is its own split, so `seed` and `split` do not apply). A task's
    name wins over a directory of that name (write `./math` for the directory)."""
    if task not in tasks.TASKS and is_data_path(task):
        return file_dataset([task], fields)
    if fields.mapped:
        raise ValueError(f"fields={fields} map the fields of a data file, but task={task!r} is "
                         "not one; give the file's path as the task")
    return task_dataset(task, seed=seed, split=split, **task_kwargs)
