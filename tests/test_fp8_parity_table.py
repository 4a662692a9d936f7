"""The FP8 parity table compares each FP8 run with the BF16 run of its own seed, and reports the
BF16 seed-to-seed spread; the numbers are recomputed here by hand."""

import statistics

from experiments.fp8_loss_parity import parity_rows


def test_parity_rows_pair_each_seed_with_its_own_bf16_run():
    finals = {"bf16": [1.00, 1.10, 0.90], "fp8_v3": [1.01, 1.10, 0.891],
              "fp8_per_tensor": [1.02, 1.12, 0.918]}
    rows = {r["recipe"]: r for r in parity_rows(finals)}
    # fp8_v3 vs bf16 per seed: +1%, 0%, -1%  -> mean 0, sample std 1
    assert rows["fp8_v3"]["rel. diff vs bf16, same seed (%)"] == "+0.000 ± 1.000"
    assert rows["fp8_v3"]["max |rel. diff| (%)"] == "1.000"
    # fp8_per_tensor: +2%, +1.818%, +2%
    rel = [2.0, 100 * 0.02 / 1.10, 2.0]
    expected = f"{statistics.mean(rel):+.3f} ± {statistics.stdev(rel):.3f}"
    assert rows["fp8_per_tensor"]["rel. diff vs bf16, same seed (%)"] == expected
    assert rows["bf16"]["final NLL"] == "1.0000 ± 0.1000"
    spread = rows["bf16 seed-to-seed spread"]
    assert spread["rel. diff vs bf16, same seed (%)"] == "std 10.000"
    assert spread["max |rel. diff| (%)"] == "20.000 (range)"


def test_one_seed_prints_single_values_and_no_spread_row():
    rows = parity_rows({"bf16": [0.75], "fp8_v3": [0.7575]})
    assert [r["recipe"] for r in rows] == ["bf16", "fp8_v3"]
    assert rows[1]["final NLL"] == "0.7575" and rows[1]["rel. diff vs bf16, same seed (%)"] == "+1.000"
