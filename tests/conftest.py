"""Shared test setup: CPU by default, GPU-marked tests skipped where no GPU exists, one persistent
XLA compilation cache for every test process, and results computed once per test run.

Compilation dominates the suite's time on CPU, and many tests compile the same tiny programs: the
persistent cache (`JAX_COMPILATION_CACHE_DIR`, default `.cache/jax` in the repo, ignored by git)
is shared by the xdist workers and by the subprocesses the end-to-end tests start (they inherit
the environment), so each program compiles once per run, and once ever on a developer's machine.
`once(name, compute)` runs an expensive, JSON-valued computation (a subprocess's report, a trained
tokenizer's path) once per run however the work-stealing scheduler spreads its tests.
"""

import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Set before jax is imported (here and in every subprocess, which inherits the environment).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# LLVM's optimisations of XLA:CPU code cost more compile time than the tiny test programs ever
# run: -O0 makes the suite ~15% faster. The programs (and so the numerics tests check) are the
# same; only CPU code generation is less optimised. Published numbers come from default flags.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _warn_afresh():
    """The scorer warns once per process about each (task, error type); each test starts afresh,
    so a test that expects the warning does not depend on which tests its worker ran before."""
    scoring = sys.modules.get("r1jax.rollout.scoring")
    if scoring is not None:
        scoring._WARNED.clear()


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> pathlib.Path:
    """A directory every worker of this test run sees (the per-run base of pytest's tmp dirs)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


@pytest.fixture(scope="session")
def once(shared_dir):
    """once(name, compute) -> compute()'s JSON value, computed by the first worker that asks;
    compute(directory) gets a directory of its own for files it wants to keep."""
    def get(name: str, compute):
        result = shared_dir / f"{name}.json"
        with FileLock(str(result) + ".lock"):
            if not result.exists():
                directory = shared_dir / name
                directory.mkdir(exist_ok=True)
                result.write_text(json.dumps(compute(directory)))
            return json.loads(result.read_text())
    return get


@pytest.fixture(scope="session")
def tokenizer(once):
    """The default tokenizer, trained once per run on the embedded corpus."""
    from r1jax.data import tokenizer as tokenizer_lib

    path = once("tokenizer", lambda d: tokenizer_lib.load_or_train_tokenizer(str(d)).model_path)
    return tokenizer_lib.Tokenizer(path)


@pytest.fixture(scope="session")
def hf_checkpoint_dirs(once):
    """{architecture: directory} of tiny random Qwen2 and Llama checkpoints sharing one BPE
    tokenizer with a chat template (tests/hf_checkpoints.py), built once per run."""
    def build(directory):
        from tests.hf_checkpoints import build_checkpoint

        qwen2 = build_checkpoint(directory / "qwen2", "qwen2", seed=0)
        llama = build_checkpoint(directory / "llama", "llama", seed=1, tokenizer_from=qwen2)
        return {"qwen2": str(qwen2), "llama": str(llama)}
    return once("hf_checkpoint_dirs", build)
