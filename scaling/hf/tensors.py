"""The one table between this project's parameters and a Hugging Face checkpoint's tensors.

Each HF tensor is a slice of one parameter leaf (a layer of the stacked `blocks`, an expert of
an MoE weight), laid out as torch's `nn.Linear` stores it: weight [out, in]. `to_hf` and
`from_hf` are each other's exact inverse (reshapes, transposes, and a power-of-two scale), so
import followed by export reproduces every tensor bitwise.

Layouts (`scaling.models.layers`): an `Einsum` kernel [D, N, H] is q_proj.weight [N*H, D] (rows
head-major, as transformers' `view(..., N, H)` reads them); the output kernel [N, H, D] is
o_proj.weight [D, N*H]; `Linear` kernels [in, out] are transposed; expert weights [E, D, F] and
[E, F, D] give one [F, D] / [D, F] tensor per expert; the router [D, E] is gate.weight [E, D].

Qwen2-MoE's shared expert has a gate, sigmoid(x . w) * shared(x), that this project's shared
experts do not: it is written as w = 0 (sigmoid(0) = 1/2 exactly) with the shared expert's
down-projection doubled, which computes exactly the same function (scaling by 2 and 1/2 is exact
in floating point). Its zero q/k/v biases are written too. On import both must be so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import ml_collections
import numpy as np

from scaling.config import expert_d_ff, head_dim
from scaling.errors import ScalingError
from scaling.hf.arch import MIXTRAL, QWEN2_MOE, QWEN3, QWEN3_MOE

Leaf = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One HF tensor and where it lives here.

  `leaf`: the parameter's path in the model state (None: a zero tensor the HF class needs, with
  no counterpart here); `index`: leading indices into the leaf (layer unit, then expert);
  `in_axes`: 0 copies the slice, k > 0 takes its first k axes as the input axes of an
  [out, in] weight; `scale`: HF = scale * ours (a power of two, so exact both ways).
  """

  name: str
  leaf: Leaf | None
  index: tuple[int, ...]
  in_axes: int
  shape: tuple[int, ...]
  scale: float = 1.0


def to_hf(t: Tensor, a: np.ndarray) -> np.ndarray:
  """The HF tensor [t.shape] from the leaf slice `a` (`leaf[index]`)."""
  if t.in_axes:
    a = a.reshape(math.prod(a.shape[:t.in_axes]), -1).T
  if t.scale != 1.0:
    a = a * np.asarray(t.scale, a.dtype)
  return np.ascontiguousarray(a).reshape(t.shape)


def from_hf(t: Tensor, h: np.ndarray, slice_shape: tuple[int, ...]) -> np.ndarray:
  """The leaf slice [slice_shape] from HF tensor `h` (inverse of `to_hf`)."""
  if t.scale != 1.0:
    h = h * np.asarray(1.0 / t.scale, h.dtype)
  if t.in_axes:
    h = h.T
  return np.ascontiguousarray(h).reshape(slice_shape)


def _attention(m, kind: str, p: str, base: Leaf, idx: tuple[int, ...]) -> list[Tensor]:
  d, n, k, h = m.d_model, m.num_heads, m.num_kv_heads, head_dim(m)
  a = (*base, "attn")
  out = [Tensor(p + "input_layernorm.weight", (*base, "attn_norm", "scale"), idx, 0, (d,)),
         Tensor(p + "self_attn.q_proj.weight", (*a, "query", "kernel"), idx, 1, (n * h, d)),
         Tensor(p + "self_attn.k_proj.weight", (*a, "key", "kernel"), idx, 1, (k * h, d)),
         Tensor(p + "self_attn.v_proj.weight", (*a, "value", "kernel"), idx, 1, (k * h, d)),
         Tensor(p + "self_attn.o_proj.weight", (*a, "out", "kernel"), idx, 2, (d, n * h)),
         Tensor(p + "post_attention_layernorm.weight", (*base, "mlp_norm", "scale"), idx, 0,
                (d,))]
  if kind in (QWEN3, QWEN3_MOE):
    out += [Tensor(p + "self_attn.q_norm.weight", (*a, "q_norm", "scale"), idx, 0, (h,)),
            Tensor(p + "self_attn.k_norm.weight", (*a, "k_norm", "scale"), idx, 0, (h,))]
  if kind == QWEN2_MOE:
    out += [Tensor(p + f"self_attn.{x}_proj.bias", None, (), 0, (size * h,))
            for x, size in (("q", n), ("k", k), ("v", k))]
  return out


def _mlp(p: str, leaf: Leaf, idx: tuple[int, ...], d: int, f: int, *,
         down_scale: float = 1.0) -> list[Tensor]:
  """A SwiGLU MLP (`layers.Mlp`) at `leaf` as HF's gate_proj/up_proj/down_proj under `p`."""
  return [Tensor(p + "gate_proj.weight", (*leaf, "gate", "kernel"), idx, 1, (f, d)),
          Tensor(p + "up_proj.weight", (*leaf, "up", "kernel"), idx, 1, (f, d)),
          Tensor(p + "down_proj.weight", (*leaf, "down", "kernel"), idx, 1, (d, f),
                 down_scale)]


def _moe(m, kind: str, p: str, base: Leaf, idx: tuple[int, ...]) -> list[Tensor]:
  d, e, f = m.d_model, m.moe.num_experts, expert_d_ff(m)
  mlp = (*base, "mlp")
  head = p + ("block_sparse_moe." if kind == MIXTRAL else "mlp.")
  names = ("w1", "w3", "w2") if kind == MIXTRAL else ("gate_proj", "up_proj", "down_proj")
  out = [Tensor(head + "gate.weight", (*mlp, "router"), idx, 1, (e, d))]
  for x in range(e):
    ex = head + f"experts.{x}."
    out += [Tensor(ex + names[0] + ".weight", (*mlp, "w_gate"), (*idx, x), 1, (f, d)),
            Tensor(ex + names[1] + ".weight", (*mlp, "w_up"), (*idx, x), 1, (f, d)),
            Tensor(ex + names[2] + ".weight", (*mlp, "w_down"), (*idx, x), 1, (d, f))]
  if m.moe.num_shared_experts:
    out += _mlp(head + "shared_expert.", (*mlp, "shared"), idx, d,
                m.moe.num_shared_experts * f, down_scale=2.0)
    out.append(Tensor(head + "shared_expert_gate.weight", None, (), 0, (1, d)))
  return out


def table(m: ml_collections.ConfigDict, kind: str) -> list[Tensor]:
  """Every HF tensor of model `m` as class `kind`, in checkpoint order (embedding, layers, final
  norm, readout)."""
  d, v = m.d_model, m.vocab_size
  is_moe = bool(m.moe.num_experts)
  out = [Tensor("model.embed_tokens.weight", ("embed", "embedding"), (), 0, (v, d))]
  for i in range(m.num_layers):
    if is_moe:  # units of `moe.every` blocks, the last one MoE (`dense.Group`)
      u, j = divmod(i, m.moe.every)
      base, idx, moe_layer = ("blocks", f"block{j}"), (u,), j == m.moe.every - 1
    else:
      base, idx, moe_layer = ("blocks",), (i,), False
    p = f"model.layers.{i}."
    out += _attention(m, kind, p, base, idx)
    out += (_moe(m, kind, p, base, idx) if moe_layer
            else _mlp(p + "mlp.", (*base, "mlp"), idx, d, m.d_ff))
  out.append(Tensor("model.norm.weight", ("final_norm", "scale"), (), 0, (d,)))
  if not m.tied_embeddings:
    out.append(Tensor("lm_head.weight", ("unembed", "kernel"), (), 1, (v, d)))
  return out


def check_covers(tensors: list[Tensor], leaves: Mapping[Leaf, tuple[int, ...]]) -> None:
  """Raises ScalingError unless `tensors` cover every element of every leaf exactly once: a
  parameter with no HF counterpart is never silently dropped."""
  covered: dict[Leaf, int] = {}
  for t in tensors:
    if t.leaf is None:
      continue
    if t.leaf not in leaves:
      raise AssertionError(f"{t.name}: no parameter {'.'.join(t.leaf)} in this model")
    shape = leaves[t.leaf]
    if math.prod(shape[len(t.index):]) != math.prod(t.shape):
      raise AssertionError(f"{t.name}: shape {t.shape} does not fit {'.'.join(t.leaf)} "
                           f"{shape}")
    covered[t.leaf] = covered.get(t.leaf, 0) + math.prod(t.shape)
  for leaf, shape in sorted(leaves.items()):
    if covered.get(leaf, 0) != math.prod(shape):
      raise ScalingError(f"cannot export: parameter {'.'.join(leaf)} {list(shape)} has no "
                         "counterpart in the Hugging Face class; nothing was written")
