"""Transformer building blocks as Flax NNX modules, with logical axis names on every parameter.

Shapes use nanodo-style suffixes: B batch, L length (queries), S length (keys), D d_model,
N query heads, K kv heads, H head dim, F d_ff, V vocab. Logical axes: `heads` (N), `kv_heads` (K),
`kv` (H), `mlp` (F), `embed` (D); `scaling.parallel.sharding` maps them to mesh axes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from scaling.config import head_dim
from scaling.models import parametrization as mup
from scaling.parallel.sharding import constrain


def no_eager_sharding(init: Callable) -> Callable:
  """Decorates a model Module's `__init__`: its Variables are created with Flax's eager sharding
  off (scoped to the construction, not the process).

  Parameters carry logical axis names that `scaling.parallel.sharding` maps to mesh axes inside a
  jitted initialiser; eager sharding would take those names for mesh axes on creation, and would
  need a mesh in context (models are also built without one: tests, `scaling info`). Each
  Variable records the setting, so merged copies keep it.
  """

  @functools.wraps(init)
  def wrapped(*args, **kwargs):
    with nnx.use_eager_sharding(False):
      return init(*args, **kwargs)

  return wrapped


def dtype_of(name: str):
  return jnp.dtype(name)


def normal(std: float, names: tuple):
  return nnx.with_partitioning(jax.nn.initializers.normal(std), names)


def rms_norm(dim: int, names: tuple, m: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.RMSNorm:
  return nnx.RMSNorm(dim, epsilon=m.norm_eps, dtype=dtype_of(m.dtype),
                     param_dtype=dtype_of(m.param_dtype),
                     scale_init=nnx.with_partitioning(jax.nn.initializers.ones, names), rngs=rngs)


def rope_tables(positions_L: jax.Array, dim: int, base: float) -> tuple[jax.Array, jax.Array]:
  """sin, cos tables [L, dim/2] for rotary embeddings (Su et al. 2021, Eq. 34)."""
  inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles_LxH2 = positions_L[:, None].astype(jnp.float32) * inv_freq[None, :]
  return jnp.sin(angles_LxH2), jnp.cos(angles_LxH2)


def apply_rope(x_BxLxNxH: jax.Array, sin_LxH2: jax.Array, cos_LxH2: jax.Array) -> jax.Array:
  """Rotates channel pairs (i, i + H/2); computed in float32, returned in the input dtype."""
  x = x_BxLxNxH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  sin, cos = sin_LxH2[None, :, None, :], cos_LxH2[None, :, None, :]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxNxH.dtype)


def sinusoid(positions: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal encodings [P, dim] (Vaswani et al. 2017, Sec. 3.5)."""
  inv_freq = 10_000.0 ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles = positions[:, None].astype(jnp.float32) * inv_freq[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class Attention(nnx.Module):
  """Causal multi-head attention with grouped-query heads, optional QK-norm and positions.

  `position="relative"` adds the Transformer-XL relative-position term (Dai et al. 2019, Eq. 3,
  term (b)): logits_ij += q_i . (W_r r_{i-j}), with r sinusoidal and W_r [D, N, H] learned per
  layer, passed to `jax.nn.dot_product_attention` as a bias.

  Under μP (`model.parametrization="mup"`, `scaling.models.parametrization`) the logits are
  scaled by 1/H instead of 1/sqrt(H), the query starts at zero, and every matrix here is a
  hidden one (init std x r^-1/2).
  """

  @no_eager_sharding
  def __init__(self, m: ml_collections.ConfigDict, rules: Mapping[str, str], *, rngs: nnx.Rngs):
    self.m, self.rules = m, rules
    d, n, k, h = m.d_model, m.num_heads, m.num_kv_heads, head_dim(m)
    dt, pdt = dtype_of(m.dtype), dtype_of(m.param_dtype)
    std = mup.hidden_std(m, m.init_std)  # every matrix here is a hidden one under μP

    def proj(heads, axis, init=None):
      return nnx.Einsum("BLD,DNH->BLNH", (d, heads, h), dtype=dt, param_dtype=pdt,
                        kernel_init=init or normal(std, ("embed", axis, "kv")), rngs=rngs)

    # μP zero-initialises the query (`scaling.models.parametrization`).
    zeros = nnx.with_partitioning(jax.nn.initializers.zeros, ("embed", "heads", "kv"))
    self.query = proj(n, "heads", zeros if mup.is_mup(m) else None)
    self.key, self.value = proj(k, "kv_heads"), proj(k, "kv_heads")
    # Scaled init on the residual-branch output (GPT-2, Radford et al. 2019, Sec. 2.3).
    self.out = nnx.Einsum("BLNH,NHD->BLD", (n, h, d), dtype=dt, param_dtype=pdt,
                          kernel_init=normal(std / math.sqrt(2 * m.num_layers),
                                             ("heads", "kv", "embed")), rngs=rngs)
    if m.qk_norm:
      self.q_norm = rms_norm(h, ("kv",), m, rngs)
      self.k_norm = rms_norm(h, ("kv",), m, rngs)
    if m.position == "relative":
      self.rel = nnx.Einsum("SD,DNH->SNH", (d, n, h), dtype=dt, param_dtype=pdt,
                            kernel_init=normal(std, ("embed", "heads", "kv")), rngs=rngs)

  def __call__(self, x_BxLxD: jax.Array, sin: jax.Array | None, cos: jax.Array | None):
    m = self.m
    q_BxLxNxH = self.query(x_BxLxD)
    k_BxLxKxH = self.key(x_BxLxD)
    v_BxLxKxH = self.value(x_BxLxD)
    if m.qk_norm:
      q_BxLxNxH, k_BxLxKxH = self.q_norm(q_BxLxNxH), self.k_norm(k_BxLxKxH)
    if m.position == "rope":
      q_BxLxNxH = apply_rope(q_BxLxNxH, sin, cos)
      k_BxLxKxH = apply_rope(k_BxLxKxH, sin, cos)
    q_BxLxNxH = constrain(q_BxLxNxH, ("batch", "length", "heads", "kv"), self.rules)
    bias = self._relative_bias(q_BxLxNxH) if m.position == "relative" else None
    impl = None if m.attention_impl == "auto" else m.attention_impl
    if bias is not None:
      impl = "xla"
    # None under SP: the default 1/sqrt(head_dim); 1/head_dim under μP.
    o_BxLxNxH = jax.nn.dot_product_attention(
        q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, bias=bias, scale=mup.attention_scale(m),
        is_causal=True, implementation=impl)
    return self.out(o_BxLxNxH)

  def _relative_bias(self, q_BxLxNxH: jax.Array) -> jax.Array:
    length, h = q_BxLxNxH.shape[1], q_BxLxNxH.shape[-1]
    r_SxD = sinusoid(jnp.arange(length), self.m.d_model).astype(q_BxLxNxH.dtype)
    r_SxNxH = self.rel(r_SxD)
    by_dist_BxNxLxS = jnp.einsum("BLNH,SNH->BNLS", q_BxLxNxH, r_SxNxH,
                                 preferred_element_type=jnp.float32)
    # Distance i - j for key j <= query i; future keys are masked by is_causal anyway.
    dist_LxS = jnp.clip(jnp.arange(length)[:, None] - jnp.arange(length)[None, :], 0)
    bias = jnp.take_along_axis(by_dist_BxNxLxS, dist_LxS[None, None], axis=-1)
    # Scaled as the q.k term: 1/sqrt(h) under SP, 1/h under μP.
    bias = bias / h if mup.is_mup(self.m) else bias / math.sqrt(h)
    return bias.astype(q_BxLxNxH.dtype)


def ffn_hidden(x: jax.Array, up: Callable[[jax.Array], jax.Array],
               gate: Callable[[jax.Array], jax.Array] | None) -> jax.Array:
  """The feed-forward hidden activation, the one definition for dense and expert MLPs.

  SwiGLU (Shazeer 2020, Eq. 6) when `gate` is given: silu(x W_gate) * (x W_up); GELU
  (Hendrycks & Gimpel 2016) otherwise: gelu(x W_up). `up`/`gate` are the input projections
  (a Linear, an einsum, a grouped matmul); [..., D] -> [..., F].
  """
  if gate is not None:
    return jax.nn.silu(gate(x)) * up(x)
  return jax.nn.gelu(up(x))


class Mlp(nnx.Module):
  """SwiGLU (Shazeer 2020, Eq. 6: three matrices) or GELU (two matrices) feed-forward."""

  @no_eager_sharding
  def __init__(self, m: ml_collections.ConfigDict, rules: Mapping[str, str], *, rngs: nnx.Rngs):
    self.m, self.rules = m, rules
    dt, pdt = dtype_of(m.dtype), dtype_of(m.param_dtype)

    def linear(i, o, names, std):
      return nnx.Linear(i, o, use_bias=False, dtype=dt, param_dtype=pdt,
                        kernel_init=normal(std, names), rngs=rngs)

    std = mup.hidden_std(m, m.init_std)  # hidden matrices under μP
    self.up = linear(m.d_model, m.d_ff, ("embed", "mlp"), std)
    if m.mlp == "swiglu":
      self.gate = linear(m.d_model, m.d_ff, ("embed", "mlp"), std)
    self.down = linear(m.d_ff, m.d_model, ("mlp", "embed"), std / math.sqrt(2 * m.num_layers))

  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    gate = self.gate if self.m.mlp == "swiglu" else None
    h_BxLxF = ffn_hidden(x_BxLxD, self.up, gate)
    h_BxLxF = constrain(h_BxLxF, ("batch", "length", "mlp"), self.rules)
    return self.down(h_BxLxF)
