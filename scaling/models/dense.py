"""Decoder-only dense transformer (Flax NNX) with scanned layers, and sharded construction.

`Transformer(cfg.model, rules, rngs=...)` maps tokens [B, L] (int32) to logits [B, L, V]
(float32). Layer parameters are stacked on a leading `layers` axis and run with `jax.lax.scan`,
so compile time does not grow with depth. `build_model(cfg, mesh)` materialises the parameters
directly in their sharded layout.

Parameters carry logical axis names and `scaling.parallel.sharding` places them from the rules
table; every model module is built with Flax's eager sharding off (`layers.no_eager_sharding`).
`model.parametrization` ("sp" | "mup") sets the init, attention and readout multipliers
(`scaling.models.parametrization`); `Transformer.coordinates` measures the activations a
coordinate check compares across widths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from scaling import xla_options
from scaling.config import head_dim
from scaling.kernels.backend import KernelBackend
from scaling.models import layers
from scaling.models import parametrization as mup
from scaling.models.layers import Attention, Mlp, dtype_of, normal, rms_norm, rope_tables
from scaling.models.moe import MoeMlp
from scaling.parallel.sharding import check_divisible, constrain, state_shardings

# `model.remat` -> what the layer scan saves for the backward pass; the names are validated
# against `scaling.config.REMAT_POLICIES`, which lists these plus "none".
CHECKPOINT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


# Scanned stacks of at most this many units (layers; MoE groups) run as straight-line code;
# deeper ones loop one unit per iteration. On the CPU the loop cost the step ~23% at nanodo's
# 4-layer shape (issue 20: 1,746 vs 2,325 tokens/s unrolled, one process,
# experiments/bench_train.py --compare=unrolled; fusion lost at the loop boundary vs residual
# slicing in the backward pass was not isolated). Unrolling every stack by 4 would help deep
# ones too, but a 4-layer body makes 48 layers compile 1.85x slower than 4 (measured; 1.09x
# with one layer a body), past the 1.5x budget, so deep stacks keep the one-layer body.
SCAN_UNROLL = 4
# On the CPU a looped stack is slower per step than the same stack unrolled, and more so the
# deeper it is: at nanodo's shape the unrolled step is 1.26-1.36x as fast at 8 layers, 1.48-1.51x
# at 16 and 2.5x at 48, while compiling in about the same time up to 16 layers (one process,
# alternating rounds: experiments/bench_train.py --shape=nanodo --layers=L --compare=unrolled).
# An unroll factor of 2 or 4 in the loop recovered only a tenth of that at 16 layers. So CPU
# stacks of up to CPU_UNROLL units run as straight-line code; deeper ones stay looped, where
# unrolled compiles grow with depth (about 4x the looped compile at 48 layers).
CPU_UNROLL = 16


def straight_line(units: int, scan_layers: bool) -> bool:
  """Whether a stack of `units` runs as straight-line code (unrolled) on this backend."""
  limit = CPU_UNROLL if jax.default_backend() == "cpu" else SCAN_UNROLL
  return not scan_layers or units <= limit


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + ffn(norm(x)).

  The feed-forward is the dense `Mlp`, or `MoeMlp` when `moe` is set; the block returns the
  MoE's router statistics and losses as a dict (empty for dense blocks).
  """

  @layers.no_eager_sharding
  def __init__(self, m: ml_collections.ConfigDict, rules: Mapping[str, str], *, rngs: nnx.Rngs,
               moe: bool = False, kernels: KernelBackend | None = None):
    self.rules, self.is_moe = rules, moe
    self.attn_norm = rms_norm(m.d_model, ("embed",), m, rngs)
    self.attn = Attention(m, rules, rngs=rngs)
    self.mlp_norm = rms_norm(m.d_model, ("embed",), m, rngs)
    self.mlp = (MoeMlp(m, rules, rngs=rngs, kernels=kernels) if moe
                else Mlp(m, rules, rngs=rngs))

  def __call__(self, x_BxLxD: jax.Array, sin, cos, *, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
    x_BxLxD, aux, _ = self.branches(x_BxLxD, sin, cos, train=train, rng=rng)
    return x_BxLxD, aux

  def branches(self, x_BxLxD: jax.Array, sin, cos, *, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, dict, tuple]:
    """The block's output, its aux dict, and its two residual branches' outputs (attention,
    feed-forward; [B, L, D] each), which `Transformer.coordinates` measures."""
    attn_BxLxD = self.attn(self.attn_norm(x_BxLxD), sin, cos)
    x_BxLxD = x_BxLxD + attn_BxLxD
    aux: dict = {}
    if self.is_moe:
      y_BxLxD, aux = self.mlp(self.mlp_norm(x_BxLxD), train=train, rng=rng)
    else:
      y_BxLxD = self.mlp(self.mlp_norm(x_BxLxD))
    x_BxLxD = x_BxLxD + y_BxLxD
    out = constrain(x_BxLxD, ("batch", "length", "embed"), self.rules)
    return out, aux, (attn_BxLxD, y_BxLxD)


class Group(nnx.Module):
  """`every` consecutive blocks whose last one is MoE: the unit scanned in MoE models."""

  @layers.no_eager_sharding
  def __init__(self, m: ml_collections.ConfigDict, rules: Mapping[str, str], *, rngs: nnx.Rngs,
               kernels: KernelBackend | None = None):
    self.size = m.moe.every
    for i in range(self.size):
      setattr(self, f"block{i}", Block(m, rules, rngs=rngs, moe=i == self.size - 1,
                                       kernels=kernels))

  def __call__(self, x_BxLxD, sin, cos, *, train: bool = False, rng=None):
    aux: dict = {}
    for i in range(self.size):
      x_BxLxD, aux_i = getattr(self, f"block{i}")(x_BxLxD, sin, cos, train=train, rng=rng)
      aux = aux_i or aux
    return x_BxLxD, aux



class Transformer(nnx.Module):
  """Token embedding, `num_layers` pre-norm blocks, final RMSNorm, (tied) output projection."""

  @layers.no_eager_sharding
  def __init__(self, m: ml_collections.ConfigDict, rules: Mapping[str, str], *, rngs: nnx.Rngs,
               kernels: KernelBackend | None = None):
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
      return unit(m, self.rules, rngs=rngs, kernels=kernels)

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
    x_BxLxD, sin, cos = self._inputs(tokens_BxL)
    graphdef, layer_state = nnx.split(self.blocks)

    units = jax.tree.leaves(layer_state)[0].shape[0]
    keys = jax.random.split(rng, units) if rng is not None else jnp.zeros((units,), jnp.uint32)

    def layer(x, inputs):
      state, key = inputs
      return nnx.merge(graphdef, state)(x, sin, cos, train=train,
                                        rng=key if rng is not None else None)

    if m.remat != "none":
      layer = jax.checkpoint(layer, policy=CHECKPOINT_POLICIES[m.remat], prevent_cse=False)
    # Unrolling (scan_layers=False) trades compile time for visibility: XLA's cost analysis counts
    # a loop body once, so FLOP checks and some profilers need the layers unrolled. Scanned, the
    # loop body holds one unit (compile time does not grow with depth), except in a shallow
    # stack (`straight_line`), which runs as straight-line code.
    unroll = units if straight_line(units, m.scan_layers) else 1
    x_BxLxD, aux = jax.lax.scan(layer, x_BxLxD, (layer_state, keys), unroll=unroll)

    logits_BxLxV = self._logits(x_BxLxD)
    if not return_aux:
      return logits_BxLxV
    losses = {}
    if aux:
      losses = {"load_balance": m.moe.load_balance_coef * jnp.sum(aux["load_balance"]),
                "router_z": m.moe.router_z_loss_coef * jnp.sum(aux["router_z"])}
    return logits_BxLxV, {"losses": losses, "stats": aux}

  def _inputs(self, tokens_BxL: jax.Array):
    """The embedded tokens [B, L, D] (plus learned positions) and the rotary tables (or None)."""
    m = self.m
    positions_L = jnp.arange(tokens_BxL.shape[1])
    x_BxLxD = self.embed(tokens_BxL)
    if m.position == "learned":
      x_BxLxD = x_BxLxD + self.pos_embed(positions_L)[None]
    x_BxLxD = constrain(x_BxLxD, ("batch", "length", "embed"), self.rules)
    sin = cos = None
    if m.position == "rope":
      sin, cos = rope_tables(positions_L, head_dim(m), m.rope_base)
    return x_BxLxD, sin, cos

  def _logits(self, x_BxLxD: jax.Array) -> jax.Array:
    """Final norm and (tied) readout: float32 logits [B, L, V]."""
    m = self.m
    x_BxLxD = self.final_norm(x_BxLxD)
    if m.tied_embeddings:
      logits_BxLxV = self.embed.attend(x_BxLxD)
    else:
      logits_BxLxV = self.unembed(x_BxLxD)
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    if (mult := mup.output_multiplier(m)) is not None:
      logits_BxLxV = logits_BxLxV * mult  # μP's readout multiplier 1/r, tied or untied
    logits_BxLxV = constrain(logits_BxLxV, ("batch", "length", "vocab"), self.rules)
    if m.logit_softcap:
      # Gemma 2 (Team et al. 2024, Sec. 2): cap * tanh(logits / cap).
      logits_BxLxV = m.logit_softcap * jnp.tanh(logits_BxLxV / m.logit_softcap)
    return logits_BxLxV

  def coordinates(self, tokens_BxL: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
    """The quantities of a coordinate check (Yang et al. 2022, μP): mean |activation|
    (float32 scalars) of the embedding output (`embed`), each block's attention and feed-forward
    branch outputs (`block{i}/attn`, `block{i}/mlp`, i counting layers) and the logits
    (`logits`), in eval mode; also the logits [B, L, V].

    The layers run one after another from the stacked parameters, through the same modules the
    scan runs (`Block.branches`), so the logits equal `self(tokens_BxL)`.
    """
    mean_abs = lambda a: jnp.mean(jnp.abs(a.astype(jnp.float32)))  # noqa: E731
    x_BxLxD, sin, cos = self._inputs(tokens_BxL)
    stats = {"embed": mean_abs(x_BxLxD)}
    graphdef, layer_state = nnx.split(self.blocks)
    layer = 0
    for u in range(jax.tree.leaves(layer_state)[0].shape[0]):
      unit = nnx.merge(graphdef, jax.tree.map(lambda a, u=u: a[u], layer_state))
      blocks = [getattr(unit, f"block{i}") for i in range(unit.size)] if self.is_moe else [unit]
      for block in blocks:
        x_BxLxD, _, (attn, ffn) = block.branches(x_BxLxD, sin, cos)
        stats[f"block{layer}/attn"], stats[f"block{layer}/mlp"] = mean_abs(attn), mean_abs(ffn)
        layer += 1
    logits_BxLxV = self._logits(x_BxLxD)
    stats["logits"] = mean_abs(logits_BxLxV)
    return stats, logits_BxLxV


def abstract_model(cfg: ml_collections.ConfigDict,
                   kernels: KernelBackend | None = None) -> Transformer:
  """The model with ShapeDtypeStruct leaves: no memory is allocated (works for 175B on a laptop)."""
  return nnx.eval_shape(lambda: Transformer(cfg.model, cfg.mesh.rules, rngs=nnx.Rngs(0),
                                            kernels=kernels))


def build_model(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None,
                seed: int | None = None, kernels: KernelBackend | None = None) -> Transformer:
  """Creates the model with every parameter initialised directly in its sharded layout.

  The initialiser is jitted with `out_shardings` from the rules, so each device only ever
  materialises its own shards (never a full copy on one device). `kernels`: where the MoE
  layers' kernels run (default: `KernelBackend.resolve()` when the model is built).
  """
  seed = cfg.train.seed if seed is None else seed
  kernels = kernels or KernelBackend.resolve()
  if mesh is None:
    return Transformer(cfg.model, dict(cfg.mesh.rules), rngs=nnx.Rngs(seed), kernels=kernels)
  graphdef, init = initializer(cfg, mesh, seed, kernels)
  return nnx.merge(graphdef, init())


def initializer(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, seed: int,
                kernels: KernelBackend) -> tuple[nnx.GraphDef, Callable[[], nnx.State]]:
  """(graphdef, init): `init()` returns the parameters (an NNX State) initialised from `seed`
  in their sharded layout, by one jitted program that a caller may keep and run again
  (`scaling.train.programs`: the rungs of one shape share it)."""
  rules = dict(cfg.mesh.rules)
  graphdef, abstract_state = nnx.split(abstract_model(cfg, kernels))
  check_divisible(abstract_state, dict(mesh.shape), rules)
  shardings = state_shardings(abstract_state, mesh, rules)

  @jax.jit
  def init():
    return nnx.state(Transformer(cfg.model, rules, rngs=nnx.Rngs(seed), kernels=kernels))

  # The initialiser runs once a run: compiled for speed on the CPU (`scaling.xla_options.INIT`).
  jitted = jax.jit(init, out_shardings=shardings,
                   compiler_options=xla_options.for_platform(xla_options.INIT, mesh))

  def run() -> nnx.State:
    with jax.set_mesh(mesh):
      return jitted()

  return graphdef, run


def moe_layer_fn(cfg: ml_collections.ConfigDict, mode: str = "fwd_bwd",
                 kernels: KernelBackend | None = None) -> tuple[Callable, Any]:
  """(fn(state, x), abstract state) of one MoE layer of `cfg` (a full config), for export.

  mode "fwd": fn returns the layer's output and aux losses; "fwd_bwd": value and gradient (in
  the state and in x) of a scalar of the output plus the load-balancing loss. No parameter is
  allocated: the state is `jax.ShapeDtypeStruct`s. `kernels` as in `build_model`.
  """
  kernels = kernels or KernelBackend.resolve()

  graphdef, state = nnx.split(nnx.eval_shape(
      lambda: MoeMlp(cfg.model, dict(cfg.mesh.rules), rngs=nnx.Rngs(0), kernels=kernels)))

  def fwd(state, x):
    return nnx.merge(graphdef, state)(x, train=True)

  def loss(state, x):
    y, aux = fwd(state, x)
    return jnp.sum(jnp.sin(y.astype(jnp.float32))) + aux["load_balance"]

  fn = fwd if mode == "fwd" else jax.value_and_grad(loss, argnums=(0, 1))
  return fn, jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), state)
