"""The Triton kernels one MoE layer launches on a GPU, lowered on any machine (no GPU needed).

  python experiments/lower_gpu.py                  # the benchmark shapes, prints one JSON object
  python experiments/lower_gpu.py --sizes=4096:8:2 --d_model=256 --d_ff=512 --dtype=float32
  python experiments/lower_gpu.py --sizes=16384:8:2:5632 --mode=fwd
  python experiments/lower_gpu.py --compile        # also build each kernel for sm_90 (`triton`)

Sizes are tokens:experts:top_k[:d_ff] (one sequence of `tokens` tokens, dropless, as in
experiments/bench_moe.py; d_ff defaults to --d_ff). The layer with `moe.dispatch=pallas` is
exported for CUDA (`scaling.kernels.lowering`: Pallas's Triton lowering for compute capability
9.0 when no GPU is present) and every Triton kernel of its forward (+ backward with
--mode=fwd_bwd) is listed with its launch configuration: grid, num_warps, num_stages, the block
shapes of its loads, stores and dots, and its dots' operand types and float32 precision. Each
kernel's Triton IR is verified on the way (an invalid kernel is an error), and no parameter is
allocated, so the benchmark shapes run on a laptop in seconds.

--compile (needs `pip install triton`, ~1 GB, so not a project dependency) takes each kernel on
through Triton's own compiler and NVIDIA's ptxas, bundled with it, to an sm_90 cubin, and adds
what only the compiled kernel knows: registers a thread, stack bytes (spills), shared memory
bytes (H100 limit 232,448 a block) and whether it issues Hopper wgmma. The IR comes from the
Triton inside jaxlib and is compiled by the pip package, so the two versions can differ from
what XLA would build: a reading, not a guarantee.
"""

from __future__ import annotations

import argparse
import collections
import json
import re

import jax
import jax.numpy as jnp

from scaling.config import default_config
from scaling.kernels import lowering
from scaling.kernels.backend import KernelBackend
from scaling.models.dense import moe_layer_fn


def layer_kernels(tokens: int, experts: int, top_k: int, d_model: int, d_ff: int, dtype: str,
                  mode: str = "fwd_bwd", compile_sm90: bool = False) -> dict:
  """The Triton kernels of one MoE layer's forward (mode "fwd") or forward + backward."""
  cfg = default_config()
  cfg.model.update(d_model=d_model, num_heads=4, num_kv_heads=4, dtype=dtype)
  cfg.model.moe.update(num_experts=experts, top_k=top_k, expert_d_ff=d_ff, dropless=True,
                       dispatch="pallas")
  fn, state = moe_layer_fn(cfg, mode, KernelBackend("gpu", interpret=False))
  args = (state, jax.ShapeDtypeStruct((1, tokens, d_model), jnp.float32))
  kernels = lowering.triton_kernels(lowering.export_cuda(fn, *args).mlir_module())
  summaries = [k.summary() for k in kernels]
  if compile_sm90:
    for k, summary in zip(kernels, summaries, strict=True):
      summary.update(_compile_sm90(k))
  return {"tokens": tokens, "experts": experts, "top_k": top_k, "d_model": d_model,
          "d_ff": d_ff, "dtype": dtype, "mode": mode, "count": len(kernels),
          "counts": dict(collections.Counter(k.name for k in kernels)),
          "kernels": summaries}


def _compile_sm90(kernel: lowering.TritonKernel) -> dict:
  import os
  import subprocess
  import tempfile

  import triton
  from triton.backends.compiler import GPUTarget

  with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, f"{kernel.name}.ttir")
    with open(src, "w") as f:
      f.write(kernel.ir)
    built = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                           options={"num_warps": kernel.num_warps,
                                    "num_stages": kernel.num_stages})
    cubin = os.path.join(tmp, "k.cubin")
    with open(cubin, "wb") as f:
      f.write(built.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")
    usage = subprocess.run([tool, "-res-usage", cubin], capture_output=True, text=True,
                           check=True).stdout
  regs, stack = (int(re.search(rf"{key}:(\d+)", usage).group(1)) for key in ("REG", "STACK"))
  return {"sm90_registers": regs, "sm90_stack_bytes": stack,
          "sm90_shared_bytes": built.metadata.shared, "sm90_wgmma": "wgmma" in built.asm["ptx"],
          "triton": triton.__version__}


def _compact(text: str) -> str:
  """Indented JSON with lists of numbers or words (and lists of those) on one line."""
  for _ in range(2):
    text = re.sub(r"\[([\w/\",\s\[\]]*)\]",
                  lambda m: "[" + re.sub(r"\s+", "", m.group(1)).replace(",", ", ") + "]", text)
  return text


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--sizes", default="16384:8:2:5632,16384:64:8:1408",
                      help="comma-separated tokens:experts:top_k[:d_ff]")
  parser.add_argument("--d_model", type=int, default=2048)
  parser.add_argument("--d_ff", type=int, default=5632, help="expert width when a size has none")
  parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
  parser.add_argument("--mode", default="fwd_bwd", choices=["fwd", "fwd_bwd"])
  parser.add_argument("--compile", action="store_true",
                      help="also compile each kernel for sm_90 with the `triton` package")
  args = parser.parse_args()
  rows = []
  for size in args.sizes.split(","):
    tokens, experts, top_k, *rest = (int(v) for v in size.split(":"))
    d_ff = rest[0] if rest else args.d_ff
    rows.append(layer_kernels(tokens, experts, top_k, args.d_model, d_ff, args.dtype,
                              args.mode, args.compile))
  print(_compact(json.dumps({"platform": "cuda",
                             "compute_capability": lowering.target_compute_capability(),
                             "jax": jax.__version__, "results": rows}, indent=2)))


if __name__ == "__main__":
  main()
