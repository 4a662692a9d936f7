"""Every experiment script honours the jax.distributed flags (through experiments/cli.py) or
refuses them with a message; none runs N unaware copies of itself."""

import glob
import os
import re
import subprocess
import sys

import pytest

from experiments import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(p for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "cli.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_script_honours_or_refuses_the_distributed_flags(path):
    source = open(path).read()
    refuses = "single_process_only(" in source or "single_process=" in source
    honours = (re.search(r"from experiments\.(cli|r1_pipeline) import .*\bparse_args\b", source)
               and "single_process=" not in source)
    assert bool(honours) != refuses, f"{path}: use experiments.cli.parse_args or single_process_only"


def test_single_process_script_refuses_a_distributed_environment():
    env = {**os.environ, "JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}
    proc = subprocess.run([sys.executable, "experiments/demo.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "runs in a single process; unset JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES" in proc.stderr


def test_distributed_flags_are_checked(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    args = ["--config", "configs/pretrain_tiny.py:runlocal", "--workdir", "/tmp/unused"]
    with pytest.raises(SystemExit, match="needs --coordinator_address"):
        cli.parse_args([*args, "--num_processes", "2"])
    with pytest.raises(SystemExit, match="--process_id=2 must be in"):
        cli.parse_args([*args, "--num_processes", "2", "--process_id", "2",
                        "--coordinator_address", "127.0.0.1:1"])


def test_bench_speculative_runs_on_a_random_model(capsys):
    """The speculative-decoding benchmark end to end on a random tiny model, 2 rows x 3 tokens:
    its table has both decodings, a positive step cost and greedy speculative output identical
    to plain greedy."""
    from experiments import bench_speculative

    bench_speculative.main(["--size", "tiny", "--mtp_modules", "1", "--rows", "2",
                            "--new_tokens", "3", "--repeats", "1"])
    table = capsys.readouterr().out
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in table.splitlines()
            if line.startswith("| greedy") or line.startswith("| T=0.6")}
    assert set(rows) == {"greedy", "T=0.6, top-p 0.95"}, table
    assert all(float(row[6]) > 0 for row in rows.values()), table  # step cost spec. / plain
    assert rows["greedy"][7] == "yes", table
    with pytest.raises(SystemExit):
        bench_speculative.main(["--config", "c.py", "--workdir", "w", "--mtp_modules", "1"])


def test_bench_decode_ops_forms_agree(capsys):
    """The decode-op benchmark's two forms of each operation give the same numbers (bit for bit
    on XLA:CPU), and the one-tile-per-expert form is taken for few tokens only."""
    from experiments import bench_decode_ops

    bench_decode_ops.main(["--calls", "1", "--rounds", "1"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| latent") or line.startswith("| routed")]
    assert len(rows) == 5
    assert [row[1] for row in rows] == ["yes", "yes", "yes", "no (rule)", "no (rule)"]
    assert all(row[-1] == "0.0e+00 |" for row in rows), rows


def test_profile_train_step_charges_forward_and_backward(capsys):
    """The train-step profile on a tiny model: backward operations are marked, shares add up."""
    from experiments import profile_train_step

    profile_train_step.main(["--size", "tiny", "--batch", "2", "--seq", "16", "--steps", "1",
                             "--top", "1000"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and re.search(r" \| [\d.]+% \|", line)]
    assert any(row[0].endswith(" bwd") for row in rows), rows
    assert abs(sum(float(row[2].rstrip("% |")) for row in rows) - 100) < 1, rows
    # The projections' dots, forward and backward, carry their GFLOP and rate.
    gflop = {row[0].lstrip("| "): row[3] for row in rows}
    assert float(gflop["nn/linear.py project bwd"]) > 0, rows


def test_dot_flops_counts_each_gemm_once():
    """The profile's FLOPs of a compiled program: 2 m k n per GEMM, batched ones times the batch,
    whether XLA:CPU runs the dot on its own or inside a fusion; elementwise work counts none."""
    import jax
    import jax.numpy as jnp

    from experiments.profile_train_step import dot_flops

    def f(x, w, a, b):
        return jnp.tanh(x @ w) * 2, jnp.einsum("bmk,bkn->bmn", a, b) + 1

    args = (jnp.ones((64, 32)), jnp.ones((32, 48)), jnp.ones((4, 16, 24)), jnp.ones((4, 24, 40)))
    hlo = jax.jit(f).lower(*args).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    names = re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", entry, re.M)
    flops = dot_flops(hlo)
    assert sum(flops[n] for n in names) == 2 * 64 * 32 * 48 + 2 * 4 * 16 * 24 * 40
    assert sorted(v for v in (flops[n] for n in names) if v) == [2 * 4 * 16 * 24 * 40,
                                                                  2 * 64 * 32 * 48]


def test_profile_peer_step_charges_hf_gemms(capsys):
    """HF's train-step profile on the same weights: logits agree, the GEMM rows carry their FLOPs
    (2 x tokens x the projections' weights at least), shares add up."""
    from experiments import profile_peer_step

    profile_peer_step.main(["--batch", "2", "--seq", "16", "--steps", "1", "--top", "1000"])
    out = capsys.readouterr().out
    assert float(re.search(r"max \|logit difference\| vs r1jax (\S+);", out).group(1)) < 1e-4
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in out.splitlines()
            if line.startswith("| ") and re.search(r" \| [\d.]+% \|", line)}
    # Each share is rounded to 0.1%.
    assert abs(sum(float(r[2].rstrip("% |")) for r in rows.values()) - 100) <= 0.05 * len(rows)
    assert float(rows["aten::mm"][3]) > 2 * 32 * 256 * 1024 / 1e9, rows["aten::mm"]


@pytest.mark.parametrize("draft", ["none", "mtp"])
def test_profile_decode_charges_the_loop_to_model_code(capsys, draft):
    """The decode profile on a random tiny model, plain or speculative: its operations are
    charged to the model's code, the latent attention and the routed experts among them, with
    shares of the total."""
    from experiments import profile_decode

    profile_decode.main(["--size", "tiny", "--rows", "2", "--prompt", "4", "--new_tokens", "3",
                         "--draft", draft, "--runs", "1", "--top", "100"])
    out = capsys.readouterr().out
    assert f"draft {draft}" in out
    by_site = out.split("\n\n| r1jax code | operation")[0]
    shares = {line.split(" | ")[0][2:]: float(line.split(" | ")[2].rstrip("% |"))
              for line in by_site.splitlines() if line.startswith("| ") and line.endswith("% |")}
    assert "nn/mla.py xla_latent_attention" in shares, shares
    assert any(site.startswith("nn/ragged_tiles.py") for site in shares), shares
    assert any(site.startswith("rollout/speculative.py") for site in shares) == (draft == "mtp")
    assert abs(sum(shares.values()) - 100) < 1, shares


@pytest.fixture
def restored_compile_cache_config():
    """The test process's own compilation cache settings (tests/conftest.py), put back after."""
    import jax

    names = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
             "jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")
    saved = {name: getattr(jax.config, name) for name in names}
    yield jax.config
    for name, value in saved.items():
        jax.config.update(name, value)


def test_compile_cache_is_on_by_default_and_the_flags_move_or_disable_it(
        restored_compile_cache_config, monkeypatch, tmp_path):
    jax_config = restored_compile_cache_config
    args = ["--config", "configs/pretrain_tiny.py:runlocal", "--workdir", str(tmp_path / "w")]
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", raising=False)
    jax_config.update("jax_enable_compilation_cache", False)

    cli.parse_args(args)
    assert jax_config.jax_enable_compilation_cache
    assert jax_config.jax_compilation_cache_dir == os.path.expanduser(cli.DEFAULT_COMPILE_CACHE_DIR)
    assert jax_config.jax_persistent_cache_min_compile_time_secs == cli.COMPILE_CACHE_MIN_COMPILE_SECS
    assert jax_config.jax_persistent_cache_min_entry_size_bytes == -1

    cli.parse_args([*args, "--compile_cache_dir", str(tmp_path / "cache")])
    assert jax_config.jax_compilation_cache_dir == str(tmp_path / "cache")

    cli.parse_args([*args, "--no_compile_cache"])
    assert not jax_config.jax_enable_compilation_cache


def test_compile_cache_defaults_to_the_environments_directory_and_thresholds(
        restored_compile_cache_config, monkeypatch, tmp_path):
    """The test suite's cache (tests/conftest.py) stays the one its script subprocesses use."""
    jax_config = restored_compile_cache_config
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "suite_cache"))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    jax_config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    cli.parse_args(["--config", "configs/pretrain_tiny.py:runlocal", "--workdir", str(tmp_path)])
    assert jax_config.jax_compilation_cache_dir == str(tmp_path / "suite_cache")
    assert jax_config.jax_persistent_cache_min_compile_time_secs == 0.0


def test_bench_attention_rows_and_agreement(capsys):
    """The grouped-query attention benchmark times its three forms on a small shape, and the
    model's form agrees with the dense softmax over repeated heads; bad shapes are refused."""
    from experiments import bench_attention

    bench_attention.main(["--shapes", "2x20x4x2x8", "--calls", "1", "--rounds", "1"])
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| 2x20")]
    assert [row[1] for row in rows] == ["forward", "forward + backward"]
    assert all(float(row[-1].rstrip(" |")) < 1e-4 for row in rows), rows
    for bad in ("2x20x4x3x8", "2x20"):
        with pytest.raises(SystemExit, match="--shapes"):
            bench_attention.main(["--shapes", bad])


def test_bench_compile_step_and_gradient_rows(capsys):
    """The compile benchmark's step row counts more kernels than its gradient-only row (the
    optimizer's per-leaf work), and bad choices are refused."""
    from experiments import bench_compile

    bench_compile.main(["--layers", "2", "--scan", "off", "--program", "step,grad",
                        "--no_compile_cache"])
    rows = {row[3]: row for row in (line.split(" | ") for line in capsys.readouterr().out
                                    .splitlines() if line.startswith("| tiny"))}
    assert set(rows) == {"step", "grad"}
    kernels = {k: int(row[5].replace(",", "")) for k, row in rows.items()}
    assert 0 < kernels["grad"] < kernels["step"], kernels
    for flag in (["--scan", "sideways"], ["--program", "loss"]):
        with pytest.raises(SystemExit, match=flag[0]):
            bench_compile.main(["--layers", "2", *flag])
