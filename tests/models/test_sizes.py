"""Every named size builds abstractly; the 671B config has the published parameter counts."""

import jax
import pytest

from r1jax import config, models
from r1jax.models.counting import count_params


@pytest.mark.parametrize("name", sorted(config.SIZES))
def test_every_size_builds_abstractly(name):
    cfg = config.get_model_config(name)
    shapes = jax.eval_shape(lambda k: models.init(cfg, k), jax.random.key(0))
    axes = models.param_axes(cfg)
    # Every param has one logical axis name (or None) per dimension.
    jax.tree.map(lambda s, a: None if len(s.shape) == len(a) else pytest.fail(f"{s.shape} vs {a}"),
                 shapes, axes, is_leaf=lambda x: isinstance(x, tuple))


def test_deepseek_v3_671b_counts():
    counts = count_params(config.deepseek_v3_671b())
    # V3 report: 671B total, 37B activated; README_WEIGHTS: MTP module 11.5B unique params.
    assert counts["total"] == 671_026_419_200
    assert counts["total_with_mtp"] == 682_636_487_424
    assert 36.5e9 < counts["activated"] < 38e9, counts
    assert 11.4e9 < counts["mtp"] < 11.7e9, counts


def test_deepseek_v2_lite_counts():
    counts = count_params(config.deepseek_v2_lite())
    assert 15.6e9 < counts["total"] < 15.8e9  # published: 15.7B total
    assert 2.3e9 < counts["activated"] - 102400 * 2048 < 2.5e9  # 2.4B activated, without embedding


def test_bad_named_size():
    with pytest.raises(ValueError, match="unknown model size 'tiny2'"):
        config.get_model_config("tiny2")
