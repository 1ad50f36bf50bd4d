"""Pallas kernels for MoE routing, each beside its pure-JAX reference (issue 6).

  router   fused softmax / top-k / per-expert counts and offsets            `router.route`
  permute  sort-free permutation plan, permute / unpermute (gather VJPs)   `permute.permute`
  gmm      grouped matmul and its transpose (custom VJP; megablox on TPU)  `gmm.gmm`, `gmm.tgmm`
  backend  which implementation runs (GPU kernel, megablox, reference, interpreted)
  lowering lower for CUDA without a GPU: kernels, launch configs, IR  `lowering.triton_kernels`

Used by the `model.moe.dispatch="pallas"` path of `scaling.models.moe.MoeMlp`.
"""
