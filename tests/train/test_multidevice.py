"""A train step on 8 simulated CPU devices equals 1 device on several meshes (<= 1e-5 fp32),
expert-parallel MoE included; checkpoints restore onto a different mesh."""

import os

import pytest

from tests.devices import run_with_devices

pytestmark = pytest.mark.slow  # a subprocess with 8 simulated devices, several meshes
HERE = os.path.dirname(os.path.abspath(__file__))


def run_multidevice_step(directory):
    return run_with_devices(os.path.join(HERE, "multidevice_step.py"), 8)


@pytest.fixture(scope="module")
def result(once):
    return once("multidevice_step", run_multidevice_step)


@pytest.mark.parametrize("mesh", ["(8, 1, 1, 1)", "(2, 2, 2, 1)", "(1, 2, 2, 2)", "(2, 1, 4, 1)"])
def test_step_matches_one_device(result, mesh):
    r = result[mesh]
    assert r["loss_diff"] <= 1e-5, r
    assert r["param_diff"] <= 1e-5, r


def test_experts_are_sharded_over_the_expert_axis(result):
    assert "expert" in result["(2, 1, 4, 1)"]["expert_spec"]


def test_restore_onto_another_mesh(result):
    r = result["restore_other_mesh"]
    assert r["max_diff"] == 0.0 and r["data_state"] == {"cursor": 7}
    assert "expert" in r["spec"]


@pytest.mark.parametrize("mesh", ["(2, 2, 2, 1)"])
def test_distill_step_matches_one_device(result, mesh):
    r = result["distill" + mesh]
    assert r["loss_diff"] <= 1e-5 and r["grad_norm_diff"] <= 1e-5, r
