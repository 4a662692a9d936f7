"""The one 128x128 block quantizer in the HF `weight_scale_inv` convention, and the FP8 constants.

r1jax.nn.fp8_quant owns E4M3_MAX (448), TILE (128) and the block quantizer; the checkpoint loader
and saver use it through checkpoint_io's HF-layout faces (`hf.quantize_block_fp8`,
`hf.dequantize_block_fp8`). Reference: the numpy model of tests/nn/test_fp8.py (a loop over blocks,
ml_dtypes casts, float64 results), bit for bit. pallas_kernels/ stands alone with its own
SCALE_BLOCK, which must equal TILE.
"""

import ast
import json
import pathlib

import jax
import ml_dtypes
import numpy as np
import pytest

from tests.nn.test_fp8 import np_quantize_blocks
from r1jax import config, models
from r1jax.interop import hf
from r1jax.interop.safetensors_io import open_checkpoint, save_sharded
from r1jax.nn import fp8_quant

REPO = pathlib.Path(__file__).resolve().parents[2]


def weights_with_a_zero_block_and_an_outlier(shape, seed):
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.05
    w[:128, :128] = 0.0  # an all-zero block: scale 1e-4/448, values 0
    w[-1, -1] = 30.0  # an outlier that sets its block's scale and pushes its neighbours to subnormals
    return w


@pytest.mark.parametrize("shape", [(256, 128), (200, 300), (136, 160), (3, 5)])
def test_hf_block_quantizer_matches_the_numpy_model(shape):
    w = weights_with_a_zero_block_and_an_outlier(shape, seed=sum(shape))  # (out, in)
    weight, scale_inv = hf.quantize_block_fp8(w)
    # The block grid of (out, in) is the grid of its transpose, so HF's blocks are the model's.
    values, scales, elem_scale = np_quantize_blocks(w)
    assert weight.shape == shape and weight.dtype == ml_dtypes.float8_e4m3fn
    assert scale_inv.shape == (-(-shape[0] // 128), -(-shape[1] // 128)) and scale_inv.dtype == np.float32
    np.testing.assert_array_equal(weight.astype(np.float64), values)
    np.testing.assert_array_equal(scale_inv, scales)
    dense = hf.dequantize_block_fp8(weight, scale_inv)  # (out, in)
    assert dense.dtype == np.float32
    np.testing.assert_array_equal(dense, (values * elem_scale).astype(np.float32))  # exact in float64
    # amax/448 blocks are a fixed point: what lets a kept E4M3 weight equal its requantization.
    again, again_scale_inv = hf.quantize_block_fp8(dense)
    np.testing.assert_array_equal(again.view(np.uint8), weight.view(np.uint8))
    np.testing.assert_array_equal(again_scale_inv, scale_inv)


@pytest.fixture(scope="module")
def fp8_checkpoint(tmp_path_factory):
    """A tiny DeepSeek-V3 saved with fp8=True; hidden 160 gives ragged 2-block rows."""
    path = tmp_path_factory.mktemp("fp8")
    cfg = config.tiny(num_mtp_modules=0, hidden_size=160)
    hf.save_checkpoint(cfg, models.init(cfg, jax.random.key(0)), str(path), fp8=True)
    return path


def test_fp8_save_declares_the_block_size(fp8_checkpoint):
    quant = json.loads((fp8_checkpoint / "config.json").read_text())["quantization_config"]
    assert quant["fmt"] == "e4m3" and quant["weight_block_size"] == [fp8_quant.TILE, fp8_quant.TILE]


def _rewrite(src, dst, change):
    """Copy the checkpoint at `src` to `dst` with `change(tensors)` applied to its tensors."""
    tensors = {name: np.array(f.get(name)) for name, f in open_checkpoint(str(src)).items()}
    change(tensors)
    save_sharded(tensors, str(dst))
    (dst / "config.json").write_text((src / "config.json").read_text())


def test_scale_grid_error_names_the_tensor(fp8_checkpoint, tmp_path):
    name = "model.layers.0.self_attn.q_a_proj.weight_scale_inv"

    def transpose_scale(tensors):
        tensors[name] = np.ascontiguousarray(tensors[name].T)  # (2, 1): q_a is (32, 160)

    _rewrite(fp8_checkpoint, tmp_path, transpose_scale)
    with pytest.raises(ValueError, match=r"q_a_proj.weight and its weight_scale_inv: .*ceil\(out/128\)"):
        hf.load_checkpoint(str(tmp_path))


def test_e5m2_weight_is_rejected_by_name(fp8_checkpoint, tmp_path):
    name = "model.layers.0.self_attn.o_proj.weight"

    def to_e5m2(tensors):
        tensors[name] = tensors[name].astype(np.float32).astype(ml_dtypes.float8_e5m2)

    _rewrite(fp8_checkpoint, tmp_path, to_e5m2)
    with pytest.raises(ValueError, match=r"o_proj.weight is float8_e5m2; block-FP8 checkpoints store E4M3"):
        hf.load_checkpoint(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# The constants: defined once in r1jax (fp8_quant.py), equal to the kernels' own
# ---------------------------------------------------------------------------------------------


def test_constants_agree_with_e4m3_and_the_kernels():
    from pallas_kernels.fp8_block_gemm import mosaic_gpu, reference

    assert fp8_quant.E4M3_MAX == float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)
    assert reference.SCALE_BLOCK == mosaic_gpu.SCALE_BLOCK == fp8_quant.TILE


def _fp8_block_name(name: str) -> bool:
    return name in ("TILE", "BLOCK", "BLOCK_SIZE") or "FP8" in name or "SCALE" in name


def _second_definitions(path: pathlib.Path) -> list[str]:
    """Lines of `path` that spell E4M3's max as a number, or bind an FP8 block name (TILE, BLOCK,
    or a name with FP8 / SCALE in it) to 128. Other 128s are tuning knobs of their own (attention
    query blocks, grouped-GEMM row tiles), not the FP8 format's block."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value == 448:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: the number 448")
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and node.value.value == 128 and _fp8_block_name(t.id):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {t.id} = 128")
    return found


def test_fp8_constants_are_defined_once():
    owner = REPO / "r1jax" / "nn" / "fp8_quant.py"
    sources = sorted((REPO / "r1jax").rglob("*.py")) + sorted((REPO / "experiments").rglob("*.py"))
    found = [line for path in sources if path != owner for line in _second_definitions(path)]
    assert not found, ("import E4M3_MAX / TILE from r1jax.nn.fp8_quant instead of defining them:\n"
                       + "\n".join(found))
    assert len(_second_definitions(owner)) == 2  # E4M3_MAX = 448.0 and TILE = 128, once each
