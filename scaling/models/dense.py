"""Decoder-only dense transformer (Flax NNX) with scanned layers, and sharded construction.

`Transformer(cfg.model, rules, rngs=...)` maps tokens [B, L] (int32) to logits [B, L, V]
(float32). Layer parameters are stacked on a leading `layers` axis and run with `jax.lax.scan`,
so compile time does not grow with depth. `build_model(cfg, mesh)` materialises the parameters
directly in their sharded layout.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from scaling.config import head_dim
from scaling.models.layers import Block, Group, dtype_of, normal, rms_norm, rope_tables
from scaling.parallel.sharding import check_divisible, constrain, state_shardings

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Transformer(nnx.Module):
  """Token embedding, `num_layers` pre-norm blocks, final RMSNorm, (tied) output projection."""

  def __init__(self, m: ml_collections.ConfigDict, rules: Mapping[str, str], *, rngs: nnx.Rngs):
    self.m, self.rules = m, dict(rules)
    dt, pdt = dtype_of(m.dtype), dtype_of(m.param_dtype)
    self.embed = nnx.Embed(m.vocab_size, m.d_model, dtype=dt, param_dtype=pdt,
                           embedding_init=normal(m.init_std, ("vocab", "embed")), rngs=rngs)
    if m.position == "learned":
      self.pos_embed = nnx.Embed(m.max_len, m.d_model, dtype=dt, param_dtype=pdt,
                                 embedding_init=normal(m.init_std, ("length", "embed")),
                                 rngs=rngs)

    # Dense: one scanned unit per layer. MoE: units of `moe.every` layers ending in an MoE.
    self.is_moe = bool(m.moe.num_experts)
    units = m.num_layers // m.moe.every if self.is_moe else m.num_layers
    unit = Group if self.is_moe else Block

    @nnx.split_rngs(splits=units)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_blocks(rngs: nnx.Rngs) -> nnx.Module:
      return unit(m, self.rules, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.final_norm = rms_norm(m.d_model, ("embed",), m, rngs)
    if not m.tied_embeddings:
      self.unembed = nnx.Linear(m.d_model, m.vocab_size, use_bias=False, dtype=dt,
                                param_dtype=pdt, kernel_init=normal(m.init_std,
                                                                    ("embed", "vocab")),
                                rngs=rngs)

  def __call__(self, tokens_BxL: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None, return_aux: bool = False):
    """Logits [B, L, V] float32; with `return_aux`, also the MoE router losses and statistics
    (`{"load_balance", "router_z"}` summed over MoE layers, per-layer stats stacked [layers/every,
    ...]; empty for dense models). `train` selects the training capacity factor and router
    jitter (which needs `rng`)."""
    m = self.m
    length = tokens_BxL.shape[1]
    positions_L = jnp.arange(length)
    x_BxLxD = self.embed(tokens_BxL)
    if m.position == "learned":
      x_BxLxD = x_BxLxD + self.pos_embed(positions_L)[None]
    x_BxLxD = constrain(x_BxLxD, ("batch", "length", "embed"), self.rules)
    sin = cos = None
    if m.position == "rope":
      sin, cos = rope_tables(positions_L, head_dim(m), m.rope_base)

    graphdef, layer_state = nnx.split(self.blocks)

    units = jax.tree.leaves(layer_state)[0].shape[0]
    keys = jax.random.split(rng, units) if rng is not None else jnp.zeros((units,), jnp.uint32)

    def layer(x, inputs):
      state, key = inputs
      return nnx.merge(graphdef, state)(x, sin, cos, train=train,
                                        rng=key if rng is not None else None)

    if m.remat != "none":
      layer = jax.checkpoint(layer, policy=REMAT_POLICIES[m.remat], prevent_cse=False)
    # Unrolling (scan_layers=False) trades compile time for visibility: XLA's cost analysis counts
    # a loop body once, so FLOP checks and some profilers need the layers unrolled.
    x_BxLxD, aux = jax.lax.scan(layer, x_BxLxD, (layer_state, keys),
                              unroll=1 if m.scan_layers else m.num_layers)

    x_BxLxD = self.final_norm(x_BxLxD)
    if m.tied_embeddings:
      logits_BxLxV = self.embed.attend(x_BxLxD)
    else:
      logits_BxLxV = self.unembed(x_BxLxD)
    logits_BxLxV = constrain(logits_BxLxV.astype(jnp.float32), ("batch", "length", "vocab"),
                             self.rules)
    if m.logit_softcap:
      # Gemma 2 (Team et al. 2024, Sec. 2): cap * tanh(logits / cap).
      logits_BxLxV = m.logit_softcap * jnp.tanh(logits_BxLxV / m.logit_softcap)
    if not return_aux:
      return logits_BxLxV
    losses = {}
    if aux:
      losses = {"load_balance": m.moe.load_balance_coef * jnp.sum(aux["load_balance"]),
                "router_z": m.moe.router_z_loss_coef * jnp.sum(aux["router_z"])}
    return logits_BxLxV, {"losses": losses, "stats": aux}


def abstract_model(cfg: ml_collections.ConfigDict) -> Transformer:
  """The model with ShapeDtypeStruct leaves: no memory is allocated (works for 175B on a laptop)."""
  return nnx.eval_shape(lambda: Transformer(cfg.model, cfg.mesh.rules, rngs=nnx.Rngs(0)))


def build_model(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None,
                seed: int | None = None) -> Transformer:
  """Creates the model with every parameter initialised directly in its sharded layout.

  The initialiser is jitted with `out_shardings` from the rules, so each device only ever
  materialises its own shards (never a full copy on one device).
  """
  seed = cfg.train.seed if seed is None else seed
  rules = dict(cfg.mesh.rules)
  if mesh is None:
    return Transformer(cfg.model, rules, rngs=nnx.Rngs(seed))
  graphdef, abstract_state = nnx.split(abstract_model(cfg))
  check_divisible(abstract_state, dict(mesh.shape), rules)
  shardings = state_shardings(abstract_state, mesh, rules)

  @jax.jit
  def init():
    return nnx.state(Transformer(cfg.model, rules, rngs=nnx.Rngs(seed)))

  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)
