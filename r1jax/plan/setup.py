"""What a plan is made for: the model, the mesh, the step's batch, the optimizer's moment dtype,
the expert dispatch, the decoding load and the hardware."""

from __future__ import annotations

import dataclasses

from r1jax.config import ModelConfig
from r1jax.plan.hardware import H800, Hardware
from r1jax.sharding import MESH_AXES

# "all_gather": what r1jax/nn/moe_dispatch.py runs (every expert shard sees its group's tokens,
# outputs come back by psum_scatter). "all_to_all": each token sent only to the shards of its
# K experts, as V3 does [V3 §3.2.2] and jax.lax.ragged_all_to_all would on GPU.
DISPATCHES = ("all_gather", "all_to_all")
# "none": the code's policy (no jax.checkpoint: the backward keeps every intermediate).
# "block": what one jax.checkpoint per decoder layer would keep (its input), as a what-if.
REMAT_POLICIES = ("none", "block")


@dataclasses.dataclass(frozen=True)
class Setup:
    model: ModelConfig
    mesh: tuple[int, int, int, int]  # (data, fsdp, expert, tensor)
    batch: int  # sequences per optimizer step, whole cluster
    seq: int  # tokens per sequence
    micro_batches: int = 1  # gradient accumulation steps (make_step's grad_accum)
    bf16_moments: bool = True  # AdamW moments stored in BF16 [V3 §3.3]
    dispatch: str = "all_gather"
    remat: str = "none"  # "none": what the code does; "block": jax.checkpoint per layer (a what-if)
    decode_batch: int = 256  # sequences decoded at once, whole cluster
    decode_context: int = 32768  # tokens held in the latent cache per sequence
    hardware: Hardware = H800

    def __post_init__(self):
        if len(self.mesh) != len(MESH_AXES) or any(s < 1 for s in self.mesh):
            raise ValueError(f"Setup.mesh={self.mesh} must give {len(MESH_AXES)} positive sizes "
                             f"{MESH_AXES}")
        if self.dispatch not in DISPATCHES:
            raise ValueError(f"Setup.dispatch={self.dispatch!r}: choose one of {DISPATCHES}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"Setup.remat={self.remat!r}: choose one of {REMAT_POLICIES}")
        rows = self.batch // self.micro_batches
        if self.batch % self.micro_batches or rows % self.token_shards:
            raise ValueError(f"Setup.batch={self.batch} must split into micro_batches="
                             f"{self.micro_batches} of rows divisible by the {self.token_shards} "
                             f"token shards (data x fsdp x expert of mesh {self.mesh})")
        if self.model.n_routed_experts % self.mesh_sizes["expert"]:
            raise ValueError(f"expert={self.mesh_sizes['expert']} must divide the "
                             f"{self.model.n_routed_experts} routed experts")

    @property
    def mesh_sizes(self) -> dict[str, int]:
        return dict(zip(MESH_AXES, self.mesh))

    @property
    def devices(self) -> int:
        d = 1
        for s in self.mesh:
            d *= s
        return d

    @property
    def token_shards(self) -> int:
        m = self.mesh_sizes
        return m["data"] * m["fsdp"] * m["expert"]

    @property
    def tokens_per_device_micro(self) -> int:
        """Tokens one device holds in one micro-batch (tokens are not split over `tensor`)."""
        return self.batch // self.micro_batches * self.seq // self.token_shards
