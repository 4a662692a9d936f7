"""Bad data as users write it: SFT rows with nothing to train on, huge texts, files that are not
UTF-8 or not Parquet. Each is skipped and counted, cut before it is tokenized, or refused with an
error that names the file and the place."""

import json

import grain
import numpy as np
import pytest

from r1jax.data import chat, pipeline, sources

SEQ_LEN = 64
LONG_PROMPT = "Compute " + "1+" * 80 + "1."  # bos + prompt alone take more than SEQ_LEN tokens


def _short(i):
    return {"prompt": f"Compute {i}+1.", "answer": str(i + 1)}


def _prompt_of_row(tokenizer, batch, row):
    text = tokenizer.decode(batch["inputs"][row][batch["segment_ids"][row] > 0])
    return text.split("User: ")[1].split("\n")[0]


def test_sft_rows_without_a_trainable_token_are_skipped_counted_and_warned(tokenizer):
    examples = [_short(i) for i in range(10)]
    examples[3:3] = [{"prompt": LONG_PROMPT, "answer": "81"}]
    examples[8:8] = [{"prompt": LONG_PROMPT + " ", "answer": "81"}]
    assert not pipeline.sft_features(tokenizer, examples[3], SEQ_LEN)["loss_mask"].any()
    skipped = pipeline.SkippedRows()
    ds = pipeline.sft_batches(grain.MapDataset.source(examples), tokenizer, seq_len=SEQ_LEN,
                              batch_size=6, skipped=skipped)
    # 18 rows take all 10 short examples of the first epoch, so both long ones have been read.
    with pytest.warns(UserWarning, match=r"skipped \d of the first \d+ examples: bos \+ prompt "
                                         r"take more than seq_len=64 tokens.*raise seq_len"):
        batches = pipeline.first_batches(ds, 3)
    assert all(batch["loss_mask"].any(axis=1).all() for batch in batches)
    trained = [_prompt_of_row(tokenizer, batch, r) for batch in batches for r in range(6)]
    assert set(trained) <= {f"Compute {i}+1." for i in range(10)}
    assert len(set(trained[:10])) == 10  # the first epoch: every short example once
    assert skipped.count >= 2 and skipped.read == 18 + skipped.count
    assert skipped.first == repr(LONG_PROMPT[:60])


def test_a_whole_batch_without_trainable_tokens_is_a_config_error(tokenizer):
    examples = grain.MapDataset.source([{"prompt": LONG_PROMPT, "answer": str(i)}
                                        for i in range(8)])
    ds = pipeline.sft_batches(examples, tokenizer, seq_len=SEQ_LEN, batch_size=4)
    with pytest.raises(ValueError, match=r"4 SFT examples in a row \(a whole batch of 4\) have no "
                                         r"completion token within seq_len=64.*raise seq_len"):
        pipeline.first_batches(ds, 1)


def _row_of(prompt_ids, ids, seq_len):
    """An SFT row as built before texts were cut: `ids` are already cut to seq_len + 1."""
    n = len(ids) - 1
    row = {key: np.zeros(seq_len, np.int32)
           for key in ("inputs", "targets", "segment_ids", "positions")}
    row["inputs"][:n], row["targets"][:n] = ids[:-1], ids[1:]
    row["segment_ids"][:n], row["positions"][:n] = 1, np.arange(n)
    row["loss_mask"] = np.zeros(seq_len, bool)
    row["loss_mask"][len(prompt_ids) - 1 : n] = True
    return row


def _uncut_sft_row(tokenizer, encode, example, seq_len):
    """Both texts tokenized whole, then the ids cut."""
    prompt_ids = [tokenizer.bos_id, *encode(chat.format_prompt(example))]
    ids = prompt_ids + [*encode(chat.completion_of(example)), tokenizer.eos_id]
    return _row_of(prompt_ids, ids[: seq_len + 1], seq_len)


def _uncut_document(tokenizer, encode, text, seq_len):
    ids = [tokenizer.bos_id, *encode(text), tokenizer.eos_id][: seq_len + 1]
    return {"inputs": np.asarray(ids[:-1], np.int32), "targets": np.asarray(ids[1:], np.int32),
            "loss_mask": np.ones(len(ids) - 1, np.int32)}


def test_only_what_fits_is_tokenized_and_rows_are_unchanged(tokenizer, monkeypatch):
    encode = tokenizer.encode
    examples = [sources.corpus_dataset(seed=0)[i] for i in range(40)]
    examples += [{"prompt": "Compute 1+1.", "reasoning": "1+1+0=2 " * n, "answer": "2"}
                 for n in (5, 30, 300)]  # completions shorter than, near and far beyond a row
    examples += [{"prompt": "Décompose 中文 " * n, "completion": " <think> é中 </think> " * n}
                 for n in (3, 40)]  # byte-fallback pieces around the cut
    examples.append({"prompt": LONG_PROMPT * 50, "answer": "1"})
    huge = {"prompt": "Compute 1+1.", "completion": " <think> " + "1+1+0=2 " * 1_300_000}
    longest_piece = max(len(tokenizer.id_to_piece(i)) for i in range(tokenizer.vocab_size))
    seen = []
    monkeypatch.setattr(tokenizer, "encode", lambda text: seen.append(len(text)) or encode(text))
    for seq_len in (16, 64, 128):
        for example in examples:
            got = pipeline.sft_features(tokenizer, example, seq_len)
            want = _uncut_sft_row(tokenizer, encode, example, seq_len)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} {seq_len}")
            document = chat.format_example(example)
            got = pipeline._document_features(tokenizer, document, seq_len)
            want = _uncut_document(tokenizer, encode, document, seq_len)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"doc {key} {seq_len}")
        seen.clear()
        row = pipeline.sft_features(tokenizer, huge, seq_len)  # a 10 MB completion
        # Its first 50,000 characters are far more than a row holds.
        head = {**huge, "completion": huge["completion"][:50_000]}
        want = _uncut_sft_row(tokenizer, encode, head, seq_len)
        for key in want:
            np.testing.assert_array_equal(row[key], want[key], err_msg=f"huge {key} {seq_len}")
        pipeline._document_features(tokenizer, chat.format_example(huge), seq_len)
        # A row holds seq_len + 1 ids, each standing for at most max_piece_chars characters:
        # never more than twice that is tokenized.
        bound = 2 * (seq_len + 1) * longest_piece
        assert max(seen) <= bound, (seq_len, max(seen), bound)


def test_jsonl_that_is_not_utf8_names_file_line_and_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"prompt": "ok", "answer": "1"}).encode()
    path.write_bytes(good + b"\n\n" + '{"prompt": "café", "answer": "2"}\n'.encode("latin-1"))
    offset = len(good) + 2 + len('{"prompt": "caf')
    with pytest.raises(ValueError, match=rf"latin1.jsonl:3: byte 0xe9 at column 16 \(file offset "
                                         rf"{offset}\) is not UTF-8.*re-encode the file"):
        sources.file_dataset(str(path))


def test_unreadable_parquet_names_the_file(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet reading needs pyarrow (not installed)")
    import pyarrow.parquet as pq

    path = tmp_path / "corrupt.parquet"
    pq.write_table(pa.table({"prompt": [f"Compute {i}+1." for i in range(200)],
                             "answer": [str(i + 1) for i in range(200)]}), path, compression="none")
    data = bytearray(path.read_bytes())
    data[100:140] = b"\xff" * 40  # a damaged data page: the footer still reads
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt.parquet: not a readable Parquet file"):
        sources.file_dataset(str(path))
