"""The plan's arithmetic: state from the real shardings, collectives that scale as their
formulas say, links by device placement, the latent cache, the CLI and its errors."""

import pytest

from r1jax import config, plan
from r1jax.plan import comms, memory
from r1jax.plan.hardware import H800, axis_within_node, link_rate
from r1jax.plan.paper import v3_pipeline_state_bytes

TINY = config.tiny(dtype="bfloat16")  # 8 experts, K=2, bf16 activations


def setup(**kw):
    base = dict(model=TINY, mesh=(1, 2, 4, 1), batch=16, seq=32, micro_batches=1)
    return plan.Setup(**{**base, **kw})


def by_name(collectives, start):
    found = [c for c in collectives if c["name"].startswith(start)]
    assert len(found) == 1, f"{start!r} in {[c['name'] for c in collectives]}"
    return found[0]


def test_bf16_moments_halve_the_optimizer_state():
    f32 = memory.state_bytes(setup(bf16_moments=False))
    bf16 = memory.state_bytes(setup(bf16_moments=True))
    assert f32["optimizer"] == pytest.approx(2 * f32["params"], rel=0.01)  # mu + nu in float32
    assert bf16["optimizer"] == pytest.approx(f32["optimizer"] / 2, rel=0.01)
    assert f32["params"] == bf16["params"] <= 1.5 * f32["params_ideal"]


def test_accumulation_adds_a_gradient_buffer_and_shrinks_activations():
    one, four = setup(micro_batches=1, batch=32), setup(micro_batches=4, batch=32)
    assert memory.state_bytes(four)["grads"] == 2 * memory.state_bytes(one)["grads"]
    assert memory.activation_bytes(four)["total"] == memory.activation_bytes(one)["total"] / 4


def test_all_gather_dispatch_moves_ep_over_k_times_the_all_to_all():
    n, d, k, ep = 16 * 32 // 8, TINY.hidden_size, TINY.num_experts_per_tok, 4
    layers = TINY.num_moe_layers + TINY.num_mtp_modules
    gather = by_name(comms.collectives(setup(dispatch="all_gather")), "expert all-gather")
    a2a = by_name(comms.collectives(setup(dispatch="all_to_all")), "expert all-to-all")
    assert gather["bytes"] == layers * (4 * (ep - 1) * n * d * 2 + (ep - 1) * n * k * 8)
    assert a2a["bytes"] == layers * 4 * n * k * d * 2 * (ep - 1) / ep
    assert a2a["seconds"] == a2a["bytes"] / H800.nvlink_bytes_per_s  # 4 GPUs: one node


def test_collectives_scale_with_micro_batches_and_data_replicas():
    one, two = comms.collectives(setup()), comms.collectives(setup(micro_batches=2, batch=32))
    for a, b in zip(one, two):
        assert b["bytes"] == pytest.approx(2 * a["bytes"]), a["name"]
    assert not [c for c in one if c["name"].startswith("data-parallel")]
    replicas = comms.collectives(setup(mesh=(2, 1, 4, 1)))
    assert by_name(replicas, "data-parallel")["bytes"] > 0


def test_the_embedding_is_the_largest_gathered_weight_of_v3():
    name, gathered = comms.largest_gathered_layer(setup(model=config.deepseek_v3_671b(dtype="bfloat16"),
                                                        mesh=(1, 32, 64, 1), batch=2048, seq=8))
    assert name == "embedding/head"
    assert gathered == (2 * 129280 + 1) * 7168 * 2  # embed, lm_head, final norm: whole, in bf16


def test_links_follow_device_placement():
    mesh = {"data": 1, "fsdp": 32, "expert": 64, "tensor": 1}
    assert not axis_within_node(mesh, "expert", 8)  # EP64 spans 8 nodes, as in V3
    assert axis_within_node({"data": 1, "fsdp": 32, "expert": 8, "tensor": 1}, "expert", 8)
    assert link_rate(H800, mesh, ["expert"]) == H800.ib_bytes_per_s
    assert link_rate(H800, {"data": 256, "fsdp": 1, "expert": 1, "tensor": 8}, ["tensor"]) == H800.nvlink_bytes_per_s


def test_v3_latent_cache_is_576_values_per_token_per_layer():
    cache = memory.latent_cache_bytes(setup(model=config.deepseek_v3_671b(dtype="bfloat16"),
                                            mesh=(1, 32, 64, 1), batch=2048, seq=8,
                                            decode_batch=2048, decode_context=1000))
    assert cache["values_per_token_per_layer"] == 576
    assert cache["bytes_per_token"] == 576 * 61 * 2
    assert cache["per_device"] == 576 * 61 * 2 * 1000  # one sequence per device


def test_flash_attention_drops_the_quadratic_term():
    xla = memory.activation_terms(setup(seq=512))["mla"]
    flash = memory.activation_terms(setup(seq=512, model=TINY.replace(kernels="pallas")))["mla"]
    assert sum(xla.values()) - sum(flash.values()) > TINY.num_heads * 512 * 8


def test_pipeline_reading_of_the_v3_report():
    pp = v3_pipeline_state_bytes()
    # 14 bytes per param unsharded (BF16 weights, FP32 grads, FP32 master + 2 BF16 moments).
    assert pp["unsharded_state"] / 14 == pytest.approx(682.6e9, rel=1e-3)  # 671.0B + 11.6B MTP
    assert pp["weights_bf16_x2"] + pp["grads_fp32"] + pp["master_and_moments"] < 80e9


def test_setup_errors_name_the_field_and_the_rule():
    with pytest.raises(ValueError, match=r"Setup.batch=12 must split into micro_batches=1 of rows"):
        setup(batch=12)
    with pytest.raises(ValueError, match=r"Setup.dispatch='ring'"):
        setup(dispatch="ring")
    with pytest.raises(ValueError, match=r"expert=3 must divide the 8 routed experts"):
        setup(mesh=(1, 1, 3, 1), batch=3)


def test_cli_prints_the_plan_and_rejects_a_bad_mesh(capsys):
    from experiments import plan as plan_script

    plan_script.main(["--size", "tiny", "--mesh", "fsdp=2,expert=4", "--batch", "16", "--seq", "32",
                      "--micro_batches", "1", "--kernels", "xla", "--precision", "bf16"])
    out = capsys.readouterr().out
    assert "# Plan: mesh data=1 fsdp=2 expert=4 tensor=1 (8 x H800)" in out
    assert "## Communication per step and device" in out and "Beside the DeepSeek-V3" not in out
    with pytest.raises(SystemExit):
        plan_script.main(["--size", "tiny", "--mesh", "fsdp=two"])
    assert "--mesh item 'fsdp=two'" in capsys.readouterr().err


@pytest.mark.slow  # three plans of the 671B config (about a minute)
def test_v3_plan_prints_the_report_beside_it():
    from r1jax.plan.paper import v3_setup

    result = plan.make_plan(v3_setup())
    rows = {r.topic: r for r in plan.paper_comparison(result)}
    assert rows["Latent KV cache"].plan.startswith("576 ")
    assert "180K" in rows["GPU-hours per trillion tokens"].paper
    implied = result["gpu_hours_per_trillion"]["compute_s"] / 180e3
    assert 0.05 < implied < 1.0, implied  # the report's rate is below peak, not absurdly so
    assert result["memory"]["params"] <= 1.5 * result["state"]["params_ideal"]
    text = plan.format_paper_comparison(list(rows.values()))
    assert text.count("\n") == len(rows) + 2
