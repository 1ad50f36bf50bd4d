"""MoE planning from a fitted MoE law, and the memory it takes to serve a model.

A plan is a concrete model: a shape of the ladder family (`scaling.models.shapes.ladder_shape`:
d_model = 64 x depth, 64-wide heads, SwiGLU, vocabulary `VOCAB`) with E routed experts at
granularity G (Krajewski et al. 2024, Sec. 3: G x E experts of width d_ff / G, G x top-k of
them per token, as `scaling.ladder.spec`'s `moe` sweeps build them). Its total and active
parameters and its training FLOPs per token come from `scaling.accounting` (the one source of
counts; FLOPs by the `chinchilla` method, which charges the router), and D = C / FLOPs per token.

- Krajewski et al. 2024 (arXiv:2402.07871), L(N, D, G) = c + (g / G^gamma + a) / N^alpha
  + b / D^beta with N the table's `params` (non-embedding, so every expert counts, as
  `scaling fit` reads a ladder): the plan is the (depth, G) of least predicted loss at the
  budget, for a given number of experts E (the law has no E: plan at the E your runs had).
- Clark et al. 2022 (arXiv:2202.01169), log L = a log N + b log E + c log N log E + d with N the
  active parameters at a fixed number of training tokens per active parameter: the law has no
  D, so the depth is the one whose D / N_active is nearest `tokens_per_param` (the ratio the
  fitted runs were trained at), and E the candidate of least predicted loss.

Serving keeps every expert resident: bf16 weights of all parameters plus a bf16 KV cache of
2 x layers x kv_heads x head_dim values per token of context, per sequence in the batch
(Mixtral 8x7B: 93.4 GB of weights for 46.7B parameters, of which 12.9B are active).
"""

from __future__ import annotations

import math

import numpy as np

from scaling.errors import ScalingError

VOCAB = 32_000  # Llama-2's and Mixtral's vocabulary, for the embedding counts of a plan
SEQ_LEN = 2048  # training context for the FLOPs-per-token attention term
FLOPS_METHOD = "chinchilla"
GRANULARITIES = (1, 2, 4, 8, 16, 32)
CLARK_EXPERTS = (1, 2, 4, 8, 16, 32, 64)
BF16 = 2  # bytes


def serving_memory(m, *, batch: int = 1, context: int = 4096) -> dict:
  """Bytes to serve model config `m` (a `cfg.model`): all weights in bf16 (every expert
  resident) and a bf16 KV cache of `batch` sequences of `context` tokens."""
  from scaling import accounting
  from scaling.config import head_dim

  if batch < 1 or context < 1:
    raise ScalingError(f"--serve-batch={batch} and --serve-context={context} must be >= 1")
  counts = accounting.param_counts(m)
  per_token = 2 * m.num_layers * m.num_kv_heads * head_dim(m) * BF16  # K and V
  weights = counts["params_total"] * BF16
  kv = per_token * context * batch
  return {"weights_bytes": float(weights), "kv_cache_bytes": float(kv),
          "total_bytes": float(weights + kv), "kv_bytes_per_token": float(per_token),
          "batch": batch, "context": context, "dtype": "bfloat16",
          "params_total": counts["params_total"], "params_active": counts["params_active"]}


def _model(m, depth: int, experts: int, granularity: int, top_k: int, context: int):
  """Sets `m` (a `cfg.model`, reused because building configs dominates the search) to a
  ladder-family shape with E experts at granularity G; False if G does not divide its d_ff."""
  from scaling.models.shapes import ladder_shape

  shape = ladder_shape(depth, vocab_size=VOCAB, max_len=context)
  if shape["d_ff"] % granularity:
    return False
  m.update(shape)
  if experts > 1:
    m.moe.update(dict(num_experts=experts * granularity, top_k=top_k * granularity,
                      expert_d_ff=shape["d_ff"] // granularity))
  else:
    m.moe.update(dict(num_experts=0, top_k=1, expert_d_ff=0))
  return True


def _candidate(law: str, p: dict, flops: float, m, granularity: int) -> dict:
  from scaling import accounting

  counts = accounting.param_counts(m)
  fpt = accounting.flops_per_token(m, SEQ_LEN)[FLOPS_METHOD]
  d = flops / fpt
  experts = int(m.moe.num_experts) or 1
  if law == "krajewski":
    n = counts["params_non_embedding"]
    loss = (p["c"] + (p["g"] / granularity ** p["gamma"] + p["a"]) / n ** p["alpha"]
            + p["b"] / d ** p["beta"])
  else:  # clark, natural parameters of scaling.fit.laws._clark_natural
    ln_n, ln_e = math.log(counts["params_active"]), math.log(experts)
    loss = math.exp(p["a"] * ln_n + p["b"] * ln_e + p["c"] * ln_n * ln_e + p["d"])
  return {"loss": float(loss), "tokens": float(d), "flops_per_token": float(fpt),
          "granularity": granularity, "experts": experts, "depth": int(m.num_layers),
          **counts}


def _depths(lo: int, hi: int) -> list[int]:
  return sorted({int(round(x)) for x in np.geomspace(lo, hi, 24)})


def plan(law: str, p: dict, flops: float, *, experts: int | None = None,
         granularity: int | None = None, top_k: int = 1, tokens_per_param: float = 20.0,
         batch: int = 1, context: int = 4096) -> dict:
  """The MoE model to train with `flops` FLOPs under a fitted `law` (`krajewski` or `clark`).

  Returns the plan's shape, `experts` (routed experts in the model, E x G), `granularity`,
  `top_k`, `params_total`, `params_active`, `params_non_embedding`, `flops_per_token`, `tokens`,
  `loss`, `serving` (`serving_memory`), and `at_edge` naming a choice at the end of the grid.
  """
  if law not in ("krajewski", "clark"):
    raise ScalingError(f"an MoE plan needs a clark or krajewski fit, not {law}")
  for name, v in (("experts", experts), ("granularity", granularity), ("top-k", top_k)):
    if v is not None and v < 1:
      raise ScalingError(f"--{name}={v} must be >= 1")
  if law == "krajewski":
    e_grid = [experts or 8]
    g_grid = [granularity] if granularity else list(GRANULARITIES)
  else:
    if granularity not in (None, 1):
      raise ScalingError(f"--granularity={granularity}: the Clark law has no granularity; "
                         "plan G with a Krajewski fit")
    e_grid, g_grid = ([experts] if experts else list(CLARK_EXPERTS)), [1]

  def score(depth: int) -> dict | None:
    """The least-loss (E, G) at this depth, ranked against other depths by the loss
    (Krajewski) or by how near D / N_active is to `tokens_per_param` (Clark)."""
    cands = [_candidate(law, p, flops, m, g) for e in e_grid for g in g_grid
             if (e > 1 or g == 1) and _model(m, depth, e, g, top_k, context)]
    if not cands:
      return None
    best = min(cands, key=lambda c: c["loss"])
    best["rank"] = (abs(math.log(best["tokens"] / best["params_active"] / tokens_per_param))
                    if law == "clark" else best["loss"])
    return best

  from scaling.config import default_config

  m = default_config().model
  # Coarse log-spaced depths, then every depth around the best (the rank is unimodal in depth).
  coarse = [s for s in (score(d) for d in _depths(1, 256)) if s is not None]
  if not coarse:
    raise ScalingError(f"--granularity={granularity} divides no ladder shape's d_ff; use a "
                       "power of two up to 32")
  top = min(coarse, key=lambda s: s["rank"])["depth"]
  fine = [s for s in (score(d) for d in range(max(1, top - 6), top + 7)) if s is not None]
  best = min(fine, key=lambda s: s["rank"])
  best.pop("rank")
  _model(m, best["depth"], best["experts"] // best["granularity"], best["granularity"], top_k,
         context)
  edge = []
  if len(g_grid) > 1 and best["granularity"] == max(g_grid):
    edge.append(f"granularity {best['granularity']} is the largest tried (--granularity "
                "fixes it)")
  if len(e_grid) > 1 and best["experts"] == max(e_grid):
    edge.append(f"{best['experts']} experts is the most tried (--experts fixes it)")
  if m.num_layers >= 256:
    edge.append("the deepest shape tried (256 layers)")
  moe = m.moe
  return dict(best, law=law, top_k=int(moe.top_k) if moe.num_experts else 1,
              expert_d_ff=int(moe.expert_d_ff or m.d_ff), at_edge=edge,
              shape={"num_layers": int(m.num_layers), "d_model": int(m.d_model),
                     "num_heads": int(m.num_heads), "d_ff": int(m.d_ff),
                     "vocab_size": int(m.vocab_size)},
              tokens_per_active_param=best["tokens"] / best["params_active"],
              flops_method=FLOPS_METHOD, seq_len=SEQ_LEN,
              serving=serving_memory(m, batch=batch, context=context),
              source={"krajewski": "Krajewski et al. 2024 (arXiv:2402.07871), L(N, D, G)",
                      "clark": "Clark et al. 2022 (arXiv:2202.01169), log L(N, E) bilinear"}[law])
