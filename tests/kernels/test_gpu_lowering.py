"""The Triton kernels lowered for CUDA on CPU: names, verified IR, launch limits, no fallbacks.

`jax.export(platforms=["cuda"])` runs Pallas's Triton lowering (and its checks: power-of-two
blocks, supported primitives) without a GPU; `scaling.kernels.lowering.triton_kernels` then
parses every kernel's Triton module, which runs the verifier XLA would run on the GPU. Inputs
are `jax.ShapeDtypeStruct`s, so the benchmark shapes (16384 tokens, d_model 2048: 8 experts
top-2 of width 5632; 64 experts top-8 of width 1408) cost no memory.
"""

from __future__ import annotations

import collections
import functools
import math

import jax
import jax.numpy as jnp
import pytest

from scaling.config import default_config
from scaling.kernels import backend, gmm, lowering, permute, router
from scaling.models.dense import moe_layer_fn
from tests.helpers import load_config

S = jax.ShapeDtypeStruct
GPU = backend.KernelBackend("gpu", interpret=False)  # what a layer built for a GPU runs
ON_GPU = GPU.kwargs()  # the kernels' own arguments for it: platform="gpu", interpret=False
DTYPES = [jnp.float32, jnp.bfloat16]
MODES = ["fwd", "fwd_bwd"]
# Ops the GPU path must not contain: the references' grouped matmul and top-k.
FALLBACKS = ("chlo.ragged_dot", "chlo.top_k")
MAX_GRID = (2**31 - 1, 65535, 65535)  # CUDA's launch limits on grid x, y, z


def _lower(fn, *args):
  """(kernel name counts, kernels, StableHLO text) of `fn` exported for CUDA (its kernels'
  implementation is whatever `fn` passes them: `ON_GPU` for the GPU kernels)."""
  text = lowering.export_cuda(fn, *args).mlir_module()
  kernels = lowering.triton_kernels(text)  # raises on IR that Triton's verifier rejects
  return collections.Counter(k.name for k in kernels), kernels, text


def _check_launch(kernels):
  for k in kernels:
    assert all(1 <= g <= limit for g, limit in zip(k.grid, MAX_GRID, strict=True)), k.summary()
    if k.name in ("moe_gmm", "moe_tgmm"):  # [m, n] accumulator tile; f32 dots need 2x warps
      dtype = jnp.float32 if k.dot_precisions[0].startswith("f32") else jnp.bfloat16
      want = gmm.num_warps(k.dots[0][0], k.dots[0][2], dtype)
    else:
      want = 4
    assert k.num_warps == want, k.summary()
    for shape in k.loads + k.stores:
      assert math.prod(shape) & (math.prod(shape) - 1) == 0, k.summary()
    for dot in k.dots:
      assert min(dot) >= 16, k.summary()  # Triton's tt.dot minimum


def _assert_gpu_path(counts, kernels, text, want):
  assert counts == collections.Counter(want)
  _check_launch(kernels)
  for op in FALLBACKS:
    assert op not in text


def _grad_of(loss, argnums):
  """Value and gradient of a nonlinear loss: its backward needs the forward outputs, so the
  forward kernels stay in the lowered module next to the backward ones."""
  return jax.value_and_grad(loss, argnums=argnums)


# --- single kernels -----------------------------------------------------------------------

ROUTER_CASES = [
    # tokens, experts, top_k, gating. 37 tokens: not a multiple of the 64-token block; 6
    # experts: padded to 8 inside the kernel.
    (37, 6, 1, "softmax_topk"),
    (37, 8, 2, "topk_softmax"),
    (20, 8, 8, "softmax_topk"),
    (16384, 8, 2, "softmax_topk"),
    (16384, 64, 8, "softmax_topk"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,experts,top_k,gating", ROUTER_CASES)
def test_router_lowers_for_cuda(tokens, experts, top_k, gating, dtype, mode):
  def fwd(z):
    r = router.route(z, top_k, gating=gating, **ON_GPU)
    return r.ids, r.weights, r.probs, r.counts

  def loss(z):
    r = router.route(z, top_k, gating=gating, **ON_GPU)
    return jnp.sum(jnp.sin(r.weights)) + jnp.sum(jnp.square(r.probs))

  fn = fwd if mode == "fwd" else _grad_of(loss, 0)
  counts, kernels, text = _lower(fn, S((tokens, experts), dtype))
  # The backward pass is plain JAX on the logits (see router.py): one kernel either way.
  _assert_gpu_path(counts, kernels, text, {"moe_router": 1})
  [k] = kernels
  block_t = min(64, 1 << (tokens - 1).bit_length())
  assert k.grid == (math.ceil(tokens / block_t), 1, 1)
  assert k.loads[0] == (block_t, 1 << (experts - 1).bit_length())


PERMUTE_CASES = [
    # groups, length, top_k, experts, capacity (None: dropless), d_model. d_model 20: not a
    # multiple of the 128-column block; 13 * top_k rows: not a multiple of the 64-row block.
    (2, 13, 1, 8, None, 20),
    (2, 13, 2, 5, 4, 20),
    (1, 11, 8, 8, 6, 20),
    (1, 16384, 2, 8, None, 2048),
    (1, 16384, 8, 64, None, 2048),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups,length,top_k,experts,capacity,d", PERMUTE_CASES)
def test_permute_unpermute_lower_for_cuda(groups, length, top_k, experts, capacity, d, dtype,
                                          mode):
  t = groups * length
  args = (S((t, d), dtype), S((t, top_k), jnp.float32), S((groups, length, top_k), jnp.int32))

  def plan_of(ids):
    return permute.make_plan(ids, experts, capacity=capacity)

  def permute_loss(x, gate, ids):
    rows = permute.permute(x, plan_of(ids), **ON_GPU)
    return jnp.sum(jnp.sin(rows.astype(jnp.float32)))

  def unpermute_loss(rows, gate, ids):
    y = permute.unpermute(rows, plan_of(ids), gate, **ON_GPU)
    return jnp.sum(jnp.sin(y.astype(jnp.float32)))

  if mode == "fwd":
    counts, kernels, text = _lower(lambda x, g, i: permute.permute(x, plan_of(i), **ON_GPU),
                                   *args)
    _assert_gpu_path(counts, kernels, text, {"moe_permute": 1})
    rows = S((t * top_k, d), dtype)
    counts, kernels, text = _lower(
        lambda r, g, i: permute.unpermute(r, plan_of(i), g, **ON_GPU), rows, *args[1:])
    _assert_gpu_path(counts, kernels, text, {"moe_unpermute": 1})
  else:
    # d_x of permute: a combine (the unpermute kernel) by the inverse permutation.
    counts, kernels, text = _lower(_grad_of(permute_loss, 0), *args)
    _assert_gpu_path(counts, kernels, text, {"moe_permute": 1, "moe_unpermute": 1})
    # d_rows: a gather (the permute kernel); d_gate: the gate-gradient kernel.
    rows = S((t * top_k, d), dtype)
    counts, kernels, text = _lower(_grad_of(unpermute_loss, (0, 1)), rows, *args[1:])
    _assert_gpu_path(counts, kernels, text, {"moe_unpermute": 1, "moe_permute": 1,
                                             "moe_unpermute_gate_grad": 1})


GMM_CASES = [
    # rows M, contraction K, columns N, groups G. 45/20/24: no multiple of any block.
    (45, 20, 24, 5),
    (45, 20, 24, 1),
    (16384 * 2, 2048, 5632, 8),  # 8 experts top-2, up projection
    (16384 * 2, 5632, 2048, 8),  # its down projection
    (16384 * 8, 2048, 1408, 64),  # 64 experts top-8
    (16384 * 8, 1408, 2048, 64),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n,g", GMM_CASES)
def test_gmm_and_tgmm_lower_for_cuda(m, k, n, g, dtype, mode):
  args = (S((m, k), dtype), S((g, k, n), dtype), S((g,), jnp.int32))

  def loss(lhs, rhs, sizes):
    return jnp.sum(jnp.sin(gmm.gmm(lhs, rhs, sizes, **ON_GPU).astype(jnp.float32)))

  if mode == "fwd":
    counts, kernels, text = _lower(functools.partial(gmm.gmm, **ON_GPU), *args)
    want = {"moe_gmm": 1}
  else:
    # Forward gmm; d_lhs: gmm with the weights read transposed; d_rhs: tgmm.
    counts, kernels, text = _lower(_grad_of(loss, (0, 1)), *args)
    want = {"moe_gmm": 2, "moe_tgmm": 1}
  _assert_gpu_path(counts, kernels, text, want)
  # The forward launch: one program per (group, m-tile) visit and n-tile, at the default
  # tiling (128, 64, 128) clipped to the problem (min 16).
  bm, bk, bn = (max(16, min(b, 1 << (d - 1).bit_length())) for b, d in zip(
      (128, 64, 128), (m, k, n), strict=True))
  fwd = next(x for x in kernels if x.name == "moe_gmm" and x.grid[1] == math.ceil(n / bn))
  assert fwd.grid == (math.ceil(m / bm) + g, math.ceil(n / bn), 1)
  assert (bm, bk, bn) in fwd.dots
  assert fwd.num_stages == 3
  # float32 products in full precision (gmm.py: no TF32), bfloat16 as is.
  want_precision = "f32/ieee" if dtype == jnp.float32 else "bf16"
  assert all(x.dot_precisions == (want_precision,) for x in kernels)
  if mode == "fwd_bwd":
    [tg] = [x for x in kernels if x.name == "moe_tgmm"]
    assert tg.grid == (g, math.ceil(k / bk), math.ceil(n / bn))


@pytest.mark.parametrize("dtype", DTYPES)
def test_public_tgmm_lowers_for_cuda(dtype):
  args = (S((45, 20), dtype), S((45, 24), dtype), S((5,), jnp.int32))
  counts, kernels, text = _lower(functools.partial(gmm.tgmm, **ON_GPU), *args)
  _assert_gpu_path(counts, kernels, text, {"moe_tgmm": 1})


def test_reference_path_shows_the_fallbacks():
  # What the assertions above guard against: exported with the references (CPU's choice,
  # passed explicitly), the same functions lower to ragged_dot and top_k and launch no kernel.
  z = S((37, 8), jnp.float32)
  counts, _, text = _lower(lambda z: router.route(z, 2, platform="cpu"), z)
  assert not counts and "chlo.top_k" in text
  args = (S((45, 20), jnp.float32), S((5, 20, 24), jnp.float32), S((5,), jnp.int32))
  counts, _, text = _lower(functools.partial(gmm.gmm, platform="cpu"), *args)
  assert not counts and "chlo.ragged_dot" in text


def test_invalid_triton_ir_is_reported():
  # Pallas does not verify the Triton module it serialises; `triton_kernels` does. The module
  # below has the defect gmm.py had: an i1 loop bound (a select between two weak-typed Python
  # ints lowered to the predicate's type), which XLA's Triton compilation rejects.
  bad = ('module { tt.func public @bad() { %c0 = arith.constant 0 : i32 '
         '%t = arith.constant true %c1 = arith.constant 1 : i32 '
         '"scf.for"(%c0, %t, %c1) ({ ^bb0(%i: i32): scf.yield }) : (i32, i1, i32) -> () '
         'tt.return } }')
  escaped = bad.replace('"', r"\22")  # a quote inside an MLIR string attribute
  config = ", ".join([f'ir = "{escaped}"', 'name = "bad"', "debug = false",
                      "num_stages = 3 : i32", "num_warps = 4 : i32", "grid_x = 1 : i32",
                      "grid_y = 1 : i32", "grid_z = 1 : i32"])
  text = ("module @m { func.func public @main(%arg0: tensor<1xi32>) -> tensor<16xf32> { "
          f"%0 = stablehlo.custom_call @{lowering.TRITON_CALL_TARGET}(%arg0) "
          f"{{mhlo.backend_config = {{{config}}}}} : (tensor<1xi32>) -> tensor<16xf32> "
          "return %0 : tensor<16xf32> } }")
  with pytest.raises(ValueError, match="'bad' has invalid IR.*same type"):
    lowering.triton_kernels(text)


# --- the MoE layer and a train step -------------------------------------------------------

LAYER_FWD = {"moe_router": 1, "moe_permute": 1, "moe_gmm": 3, "moe_unpermute": 1}
# Backward: unpermute -> gather + gate grad; 3 gmm -> 3 (gmm + tgmm); permute -> combine.
LAYER_FWD_BWD = {"moe_router": 1, "moe_permute": 2, "moe_unpermute": 2,
                 "moe_unpermute_gate_grad": 1, "moe_gmm": 6, "moe_tgmm": 3}


def _layer_cfg(size: str | tuple[int, int, int, int], dtype: str):
  if size == "tiny":
    cfg = load_config("configs/moe.py:tiny")  # d_model 64, 8 experts of width 128, top-2
    cfg.model.moe.capacity_factor = 1.0  # drops: the zero tail of the permutation
    batch, length = 2, 12
  else:
    tokens, experts, top_k, d_ff = size
    cfg = default_config()  # as experiments/bench_moe.py: one sequence, dropless
    cfg.model.update(d_model=2048, num_heads=16, num_kv_heads=16)
    cfg.model.moe.update(num_experts=experts, top_k=top_k, expert_d_ff=d_ff, dropless=True)
    batch, length = 1, tokens
  cfg.model.dtype = dtype
  cfg.model.moe.dispatch = "pallas"
  return cfg, S((batch, length, cfg.model.d_model), jnp.float32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size,dtype", [
    ("tiny", "float32"),
    ("tiny", "bfloat16"),
    ((16384, 8, 2, 5632), "bfloat16"),
    ((16384, 64, 8, 1408), "bfloat16"),
])
def test_moe_layer_lowers_every_kernel_for_cuda(size, dtype, mode):
  cfg, x = _layer_cfg(size, dtype)
  assert cfg.model.mlp == "swiglu"  # three expert matmuls
  fn, state = moe_layer_fn(cfg, mode, GPU)
  counts, kernels, text = _lower(fn, state, x)
  _assert_gpu_path(counts, kernels, text, LAYER_FWD if mode == "fwd" else LAYER_FWD_BWD)


def test_sort_dispatch_layer_shows_ragged_dot():
  # The layer-level guard can fail: the `sort` dispatch lowers to ragged_dot, no kernels.
  cfg, x = _layer_cfg("tiny", "float32")
  cfg.model.moe.dispatch = "sort"
  fn, state = moe_layer_fn(cfg, "fwd_bwd", GPU)
  counts, _, text = _lower(fn, state, x)
  assert not counts and "chlo.ragged_dot" in text


@pytest.mark.parametrize("data,model", [(1, 1), (4, 2)])
def test_train_step_lowers_every_kernel_for_cuda(data, model):
  # The whole jitted, sharded train step of configs/moe.py:tiny with the pallas dispatch: its 2
  # MoE layers are scanned (no remat), so each kernel appears as often as in one layer. On a
  # (data=4, model=2) mesh the kernels run per batch shard (inside shard_map), so their row
  # operands are one device's: 8 / 4 sequences x 32 tokens x top_k 2 = 128 rows, not 512.
  from scaling.parallel.mesh import make_mesh
  from scaling.train.loop import build_trainer

  cfg = load_config("configs/moe.py:tiny")
  cfg.model.moe.dispatch = "pallas"
  cfg.train.update(global_batch=8, seq_len=32)
  cfg.mesh.update(data=data, model=model, expert=1)
  mesh = make_mesh(cfg.mesh, jax.devices()[:data * model])
  trainer = build_trainer(cfg, mesh, kernels=GPU)  # its MoE layers keep this choice
  state = jax.tree.map(lambda a: S(a.shape, a.dtype, sharding=a.sharding), trainer.state)
  tokens = S((8, 32), jnp.int32, sharding=trainer.batch_sharding)
  batch = {"inputs": tokens, "targets": tokens,
           "mask": S((8, 32), jnp.float32, sharding=trainer.batch_sharding)}
  counts, kernels, text = _lower(trainer.train_step, state, batch)
  _assert_gpu_path(counts, kernels, text, LAYER_FWD_BWD)
  rows = 8 // data * 32 * cfg.model.moe.top_k
  gmm_calls = [line for line in text.splitlines()
               if lowering.TRITON_CALL_TARGET in line and 'name = "moe_gmm"' in line]
  assert gmm_calls and all(f"tensor<{rows}x" in line for line in gmm_calls)
