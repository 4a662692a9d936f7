r"""Users' math data sets: JSONL, Parquet and `datasets` save_to_disk directories in the GSM8K, MATH
and mapped layouts become `math` task records that SFT and GRPO consume; bad rows and unknown
layouts fail naming the file, the row and the field, or are skipped and counted."""

import json

import pytest

from r1jax.data import chat, layouts, pipeline, sources
from r1jax.rollout import scoring

GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
                 "many clips in May. How many clips did Natalia sell altogether?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72"},
    {"question": "A house costs $1,250 a month. What is the rent for two months?",
     "answer": "2 * 1250 = <<2*1250=2500>>2500\n#### 2,500"},
]
GSM8K_RECORDS = [
    {"task": "math", "prompt": GSM8K_ROWS[0]["question"], "answer": "72",
     "reasoning": "Natalia sold 48/2 = 24 clips in May.\n"
                  "Natalia sold 48+24 = 72 clips altogether."},
    {"task": "math", "prompt": GSM8K_ROWS[1]["question"], "answer": "2,500",
     "reasoning": "2 * 1250 = 2500"},
]
MATH_ROWS = [
    {"problem": "What is $\\frac{1}{2} + \\frac{1}{3}$?", "level": "Level 1", "type": "Algebra",
     "solution": "We have $\\frac{1}{2} + \\frac{1}{3} = \\boxed{\\frac{5}{6}}$."},
    {"problem": "Which $x$ satisfy $x^2 = x$?", "level": "Level 2", "type": "Algebra",
     "solution": "First $\\boxed{0}$ works; so does $1$, so the set is $\\boxed{\\{0, 1\\}}$."},
]
MATH_RECORDS = [
    {"task": "math", "prompt": MATH_ROWS[0]["problem"], "answer": "\\frac{5}{6}",
     "reasoning": MATH_ROWS[0]["solution"]},
    {"task": "math", "prompt": MATH_ROWS[1]["problem"], "answer": "\\{0, 1\\}",  # the last box
     "reasoning": MATH_ROWS[1]["solution"]},
]
# A layout no name gives away: the fields are mapped with FieldMap (config flags).
CUSTOM_ROWS = [
    {"instruction": "Add 2 and 3.", "final": 5, "worked": "2 + 3 = 5"},
    {"instruction": "Double 9.", "final": 18, "worked": "9 * 2"},
]
CUSTOM_FIELDS = layouts.FieldMap(prompt_field="instruction", answer_field="final",
                                 solution_field="worked")
CUSTOM_RECORDS = [
    {"task": "math", "prompt": "Add 2 and 3.", "answer": "5", "reasoning": "2 + 3 = 5"},
    {"task": "math", "prompt": "Double 9.", "answer": "18", "reasoning": "9 * 2"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def write_saved_dataset(path, rows):
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return str(path)


WRITERS = {"jsonl": (write_jsonl, "data.jsonl"), "parquet": (write_parquet, "data.parquet"),
           "save_to_disk": (write_saved_dataset, "saved")}
LAYOUTS = {"gsm8k": (GSM8K_ROWS, layouts.FieldMap(), GSM8K_RECORDS),
           "math": (MATH_ROWS, layouts.FieldMap(), MATH_RECORDS),
           "mapped": (CUSTOM_ROWS, CUSTOM_FIELDS, CUSTOM_RECORDS)}


def write(tmp_path, file_format, rows):
    writer, name = WRITERS[file_format]
    return writer(tmp_path / name, rows)


@pytest.mark.parametrize("file_format", WRITERS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_format_and_layout_gives_math_records(tmp_path, file_format, layout):
    rows, fields, records = LAYOUTS[layout]
    examples = sources.file_dataset(write(tmp_path, file_format, rows), fields)
    assert [examples[i] for i in range(len(examples))] == records


def test_layouts_are_recognised_by_their_field_names():
    assert layouts.recognise_layout(GSM8K_ROWS[0], "x") == layouts.GSM8K
    assert layouts.recognise_layout(MATH_ROWS[0], "x") == layouts.MATH
    assert layouts.recognise_layout({"prompt": "p", "answer": "1"}, "x") == layouts.NATIVE
    assert layouts.recognise_layout(CUSTOM_ROWS[0], "x", CUSTOM_FIELDS) == layouts.MAPPED


def test_a_solution_alone_gives_the_reference_by_hashes_or_box(tmp_path):
    rows = [{"q": "2+2?", "sol": "2+2=<<2+2=4>>4\n#### 4"},
            {"q": "Half of 1?", "sol": "It is $\\boxed{\\frac{1}{2}}$."}]
    fields = layouts.FieldMap(prompt_field="q", solution_field="sol")
    examples = sources.file_dataset(write_jsonl(tmp_path / "s.jsonl", rows), fields)
    assert [(e["answer"], e["reasoning"]) for e in examples] == [
        ("4", "2+2=4"), ("\\frac{1}{2}", "It is $\\boxed{\\frac{1}{2}}$.")]


def test_a_dataset_dict_with_one_split_loads_and_with_two_names_them(tmp_path):
    import datasets

    one = tmp_path / "one"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(MATH_ROWS)}).save_to_disk(str(one))
    assert len(sources.file_dataset(str(one))) == 2
    two = tmp_path / "two"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(GSM8K_ROWS),
                          "test": datasets.Dataset.from_list(GSM8K_ROWS)}).save_to_disk(str(two))
    with pytest.raises(ValueError, match=r"two: a DatasetDict with splits \['test', 'train'\]; "
                                         r"give one split's directory, e.g. .*two/test"):
        sources.file_dataset(str(two))
    assert len(sources.file_dataset(str(two / "train"))) == 2


def test_a_directory_that_is_not_a_saved_data_set_says_what_to_give(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="plain: a directory, but not a data set written by "
                                         "datasets' save_to_disk"):
        sources.file_dataset(str(tmp_path / "plain"))


# ------------------------------------------------------------------------------ bad data

@pytest.mark.parametrize("file_format, where", [("jsonl", "data.jsonl:2"),
                                                ("parquet", "data.parquet:row 1"),
                                                ("save_to_disk", "saved:row 1")])
def test_a_missing_field_names_file_row_and_field(tmp_path, file_format, where):
    rows = [GSM8K_ROWS[0], {"question": "What is 1+1?", "answer": None}]
    with pytest.raises(ValueError, match=rf"{where}: missing field 'answer' \(fields: "
                                         rf"\['answer', 'question'\]\)"):
        sources.file_dataset(write(tmp_path, file_format, rows))


@pytest.mark.parametrize("file_format", WRITERS)
def test_an_unknown_layout_lists_the_fields_and_the_flags(tmp_path, file_format):
    path = write(tmp_path, file_format, CUSTOM_ROWS)
    with pytest.raises(ValueError, match=r"unrecognised layout, fields found: \['final', "
                                         r"'instruction', 'worked'\].*prompt_field=.*"
                                         r"answer_field=.*solution_field="):
        sources.file_dataset(path)


def test_mapped_fields_that_are_absent_are_named(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", CUSTOM_ROWS)
    fields = layouts.FieldMap(prompt_field="instruction", answer_field="result")
    with pytest.raises(ValueError, match=r"c.jsonl: the mapped fields \['result'\] are not in "
                                         r"the data \(fields found: \['final', 'instruction', "
                                         r"'worked'\]\)"):
        sources.file_dataset(path, fields)


def test_a_field_map_must_name_the_prompt_and_a_reference(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", CUSTOM_ROWS)
    with pytest.raises(ValueError, match="need prompt_field too"):
        sources.file_dataset(path, layouts.FieldMap(answer_field="final"))
    with pytest.raises(ValueError, match="needs answer_field or solution_field"):
        sources.file_dataset(path, layouts.FieldMap(prompt_field="instruction"))


@pytest.mark.parametrize("rows, reason", [
    ([GSM8K_ROWS[0], {"question": "q", "answer": "The total is 7."}, GSM8K_ROWS[1]],
     "has no '#### <number>' line"),
    ([MATH_ROWS[0], {"problem": "p", "solution": "The answer is 7."}, MATH_ROWS[1]],
     r"has no complete \\boxed\{...\}"),
    ([MATH_ROWS[0], {"problem": "p", "solution": "So $\\boxed{7$."}, MATH_ROWS[1]],
     r"has no complete \\boxed\{...\}"),
])
def test_rows_without_a_readable_reference_are_skipped_and_counted(tmp_path, rows, reason):
    path = write_jsonl(tmp_path / "some.jsonl", rows)
    with pytest.warns(UserWarning, match=rf"some.jsonl: skipped 1 of 3 rows whose reference "
                                         rf"answer cannot be read \(\w+ layout; first: "
                                         rf".*some.jsonl:2: the \w+ {reason}\)"):
        examples = sources.file_dataset(path)
    assert len(examples) == 2


def test_a_file_with_no_readable_reference_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "none.jsonl", [{"question": "q", "answer": "7"}] * 3)
    with pytest.raises(ValueError, match=r"none.jsonl: no row has a readable reference answer "
                                         r"\(gsm8k layout; first: .*none.jsonl:1: the answer has "
                                         r"no '#### <number>' line\)"):
        sources.file_dataset(path)


# ------------------------------------------------------------------------------ consumers

def test_records_feed_sft_and_are_judged_by_score_in_grpo_batches(tmp_path, tokenizer):
    examples = sources.file_dataset(write_parquet(tmp_path / "g.parquet", GSM8K_ROWS))
    sft = pipeline.first_batches(pipeline.sft_batches(examples, tokenizer, seq_len=512,
                                                      batch_size=2, seed=0), 1)[0]
    completions = {tokenizer.decode(sft["targets"][r][sft["loss_mask"][r]]) for r in range(2)}
    assert completions == {tokenizer.decode(tokenizer.encode(chat.completion_of(r)))
                           for r in GSM8K_RECORDS}
    rl = pipeline.first_batches(pipeline.rl_prompt_batches(examples, tokenizer,
                                                           max_prompt_len=256, batch_size=2), 1)[0]
    problems = list(rl["examples"])
    answers = {"72": (r"\boxed{72}", "27"), "2,500": (r"\$2500", "2,499")}
    completions, judged = [], []
    for problem in problems:
        right, wrong = answers[problem["answer"]]
        completions += [chat.format_completion("", right), chat.format_completion("", wrong)]
        judged += [problem, problem]
    got = scoring.score(completions, judged, (("accuracy", 1.0),))
    assert got.correct.tolist() == [True, False, True, False]
    assert not got.errors.any()


def test_a_task_setting_names_a_generated_task_or_data_on_disk(tmp_path, monkeypatch):
    path = write_saved_dataset(tmp_path / "math", MATH_ROWS)
    assert len(sources.examples_of(path, seed=0)) == 2
    assert sources.examples_of("arithmetic", seed=0)[0]["task"] == "arithmetic"
    monkeypatch.chdir(tmp_path)  # a directory named like a task does not shadow it
    with pytest.raises(ValueError, match="task='math' is not generated"):
        sources.examples_of("math", seed=0)
    assert len(sources.examples_of("./math", seed=0)) == 2
    with pytest.raises(ValueError, match="map the fields of a data file, but task='arithmetic'"):
        sources.examples_of("arithmetic", seed=0, fields=CUSTOM_FIELDS)
