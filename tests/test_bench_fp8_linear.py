"""The FP8 linear benchmark runs end to end at small, ragged shapes and prints its table (on CPU
the device is the emulation itself, so every error column must be exactly zero)."""

from experiments import bench_fp8_linear


def test_bench_fp8_linear_prints_a_table(capsys):
    bench_fp8_linear.main(["--shapes", "130x200x150", "--iters", "1"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 130x200x150")]
    assert len(lines) == 1
    cells = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[1:4] == ["0.00e+00"] * 3  # err y, dx, dw
    assert all(float(c) > 0 for c in cells[4:])


def test_small_numbers_keep_their_digits():
    """A throughput far under 0.001 (an emulated GEMM on a loaded machine) must not print as 0."""
    assert bench_fp8_linear.number(0.00031) == "0.00031"
    assert float(bench_fp8_linear.number(4.2e-7)) > 0
    assert bench_fp8_linear.number(1234.5678) == "1234.568"
