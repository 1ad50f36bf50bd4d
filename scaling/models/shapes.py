"""Model shapes: named presets for published models and the ladder rule for scaling families.

A shape is a dict of `model.*` config fields. Published presets copy the shapes in
`scaling/reference_data/published_model_shapes.csv` (sources there); the parameter counts they
give under this codebase's architecture are checked against the published sizes in tests.
"""

from __future__ import annotations

import math

from scaling.errors import ScalingError

# Published shapes. Architecture differences from the originals are stated per entry; they
# change counts by at most ~0.3% except where noted.
PRESETS: dict[str, dict] = {
    # Runs in seconds on a laptop CPU.
    "tiny": dict(num_layers=2, d_model=64, num_heads=4, num_kv_heads=4, d_ff=256,
                 vocab_size=512, max_len=128),
    "small": dict(num_layers=4, d_model=128, num_heads=4, num_kv_heads=2, d_ff=512,
                  vocab_size=512, max_len=256),
    # GPT-2 124M (Radford et al. 2019): learned positions, GELU, tied. Ours uses RMSNorm without
    # biases, so N is 84.95M against the released 85.06M.
    "gpt2_124m": dict(num_layers=12, d_model=768, num_heads=12, num_kv_heads=12, d_ff=3072,
                      vocab_size=50257, max_len=1024, mlp="gelu", position="learned",
                      tied_embeddings=True),
    # GPT-3 175B (Brown et al. 2020, Table 2.1): d_ff = 4 d_model, n_ctx 2048.
    "gpt3_175b": dict(num_layers=96, d_model=12288, num_heads=96, num_kv_heads=96, d_ff=49152,
                      vocab_size=50257, max_len=2048, mlp="gelu", position="learned",
                      tied_embeddings=True),
    # Chinchilla 70B (Hoffmann et al. 2022, Table 4): Gopher architecture with Transformer-XL
    # relative positions, whose key projection per layer is part of the 70B.
    "chinchilla_70b": dict(num_layers=80, d_model=8192, num_heads=64, num_kv_heads=64,
                           head_dim=128, d_ff=32768, vocab_size=32000, max_len=2048, mlp="gelu",
                           position="relative", tied_embeddings=True),
    # Llama-2 7B (Touvron et al. 2023): SwiGLU, RoPE, untied; exact count 6,738,415,616.
    "llama2_7b": dict(num_layers=32, d_model=4096, num_heads=32, num_kv_heads=32, d_ff=11008,
                      vocab_size=32000, max_len=4096, mlp="swiglu", position="rope",
                      tied_embeddings=False, norm_eps=1e-5),
    # Llama-2 70B: grouped-query attention with 8 kv heads; exact count 68,976,648,192.
    "llama2_70b": dict(num_layers=80, d_model=8192, num_heads=64, num_kv_heads=8, d_ff=28672,
                       vocab_size=32000, max_len=4096, mlp="swiglu", position="rope",
                       tied_embeddings=False, norm_eps=1e-5),
}


def ladder_shape(depth: int, *, aspect: int = 64, head_dim: int = 64, vocab_size: int = 512,
                 max_len: int = 1024, mlp: str = "swiglu") -> dict:
  """One rung of a model family from a single scale knob, `depth` (number of layers).

  Aspect rule: d_model = aspect x depth, heads of width `head_dim` (fewer when d_model is
  small), d_ff = 4 d_model for GELU and 8/3 d_model for SwiGLU (same MLP parameters, as in
  Shazeer 2020), rounded to a multiple of 32. Kaplan et al. 2020 (Sec. 3.1, Fig. 5) find the loss
  within a few percent of optimal for d_model / n_layer between ~20 and ~200 at fixed N, so a
  fixed aspect of 64 keeps every rung near-optimal; N = 12 depth d_model^2 ~ 49,152 depth^3 spans
  4.9e4 (depth 1) to 1.0e11 (depth 128); aspect=32 at depth 1 gives ~1.2e4.
  """
  if depth < 1:
    raise ScalingError(f"ladder depth={depth} must be >= 1")
  d_model = aspect * depth
  hd = min(head_dim, d_model)
  num_heads = max(1, d_model // hd)
  d_ff = 4 * d_model if mlp == "gelu" else 8 * d_model / 3
  d_ff = max(32, int(round(d_ff / 32)) * 32)
  return dict(num_layers=depth, d_model=d_model, num_heads=num_heads, num_kv_heads=num_heads,
              head_dim=hd if hd * num_heads != d_model else 0, d_ff=d_ff, vocab_size=vocab_size,
              max_len=max_len, mlp=mlp, name=f"ladder_d{depth}")


def depth_for_params(target: float, *, aspect: int = 64) -> int:
  """Depth whose ladder rung has ~`target` non-embedding parameters (N ~ 12 aspect^2 depth^3)."""
  return max(1, int(round((target / (12 * aspect**2)) ** (1 / 3))))


def get_shape(name: str) -> dict:
  """The model fields of preset `name`, or of `ladder_d<depth>`."""
  if name.startswith("ladder_d") and name[len("ladder_d"):].isdigit():
    return ladder_shape(int(name[len("ladder_d"):]))
  if name not in PRESETS:
    raise ScalingError(
        f"unknown model preset {name!r}; choose one of {', '.join(sorted(PRESETS))} "
        "or ladder_d<depth>")
  return dict(PRESETS[name], name=name)


def log_spaced_depths(n_min: float, n_max: float, count: int, *, aspect: int = 64) -> list[int]:
  """Distinct depths whose N are spaced evenly in log between n_min and n_max."""
  if count < 1 or n_min <= 0 or n_max < n_min:
    raise ScalingError("need count >= 1 and 0 < n_min <= n_max")
  logs = [math.log(n_min) + i * (math.log(n_max / n_min)) / max(1, count - 1)
          for i in range(count)]
  return sorted({depth_for_params(math.exp(x), aspect=aspect) for x in logs})
