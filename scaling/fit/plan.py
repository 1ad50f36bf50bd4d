"""Compute-optimal planning: N_opt, D_opt and loss for a budget, training time, over-training.

Units: FLOPs, parameters, tokens, seconds/hours, bytes; loss in the law's nats/token.
"""

from __future__ import annotations

import json
import os

import numpy as np

from scaling import hardware
from scaling.errors import ScalingError
from scaling.fit import laws as laws_lib
from scaling.fit import published
from scaling.fit.core import Fit


def budget_from_gpu_hours(gpu_hours: float, hardware_name: str, mfu: float) -> float:
  """Training FLOPs from device-hours: C = hours * 3600 s * peak FLOP/s * MFU."""
  if not 0 < mfu <= 1:
    raise ScalingError(f"--mfu={mfu} must be in (0, 1], e.g. 0.4")
  if gpu_hours <= 0:
    raise ScalingError(f"--gpu-hours={gpu_hours} must be positive")
  return gpu_hours * 3600.0 * hardware.peak_flops(hardware_name) * mfu


def training_time(flops: float, hardware_name: str, mfu: float, devices: int = 1) -> dict:
  """Wall time for `flops` on `devices` devices at `mfu` of the datasheet peak."""
  peak = hardware.peak_flops(hardware_name)
  device_s = flops / (peak * mfu)
  return {"hardware": hardware_name, "mfu": mfu, "devices": devices,
          "device_hours": device_s / 3600.0, "wall_hours": device_s / 3600.0 / devices,
          "peak_flops_per_device": peak}


class LawSource:
  """A law to plan with: a published law, or a fit JSON (with bootstrap samples if written)."""

  def __init__(self, spec: str):
    self.fit = None
    self.law = None
    if spec.endswith(".json") or os.path.exists(spec):
      if not os.path.exists(spec):
        raise ScalingError(f"--law={spec}: no such fit file")
      with open(spec) as fh:
        try:
          obj = json.load(fh)
        except json.JSONDecodeError as e:
          raise ScalingError(f"--law={spec}: not a fit JSON ({e.msg})") from None
      if "params" not in obj or "law" not in obj:
        raise ScalingError(f"--law={spec}: not a fit JSON from `scaling fit` (no 'params'/'law')")
      self.fit = Fit.from_json(obj)
      self.name = spec
      self.source = f"fit {spec} ({self.fit.law}, approach {self.fit.approach})"
    else:
      self.law = published.get(spec)
      self.name = self.law.name
      self.source = self.law.source

  @property
  def chinchilla_params(self) -> dict | None:
    if self.law is not None and self.law.kind == "chinchilla":
      return self.law.params
    if self.fit is not None and self.fit.law == "chinchilla" and "E" in self.fit.params:
      return self.fit.params
    return None

  def optimal(self, flops: float, k: float = 6.0) -> dict:
    """Point estimate and, for fits with samples, percentile intervals."""
    if self.law is not None:
      out = {key: (None if v is None else float(v)) for key, v in
             self.law.optimal(flops, k).items()}
      return out
    fit = self.fit
    p = fit.params
    if "E" in p:
      o = laws_lib.chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"], flops, k)
      out = {"params": float(o["params"]), "tokens": float(o["tokens"]),
             "loss": float(o["loss"])}
      s = fit.samples
      if s and "E" in s:
        so = laws_lib.chinchilla_optimal(s["E"], s["A"], s["B"], s["alpha"], s["beta"], flops, k)
        out["intervals"] = {key: _interval(so[key], fit.ci) for key in ("params", "tokens", "loss")}
      return out
    if "k_N" in p:  # approach 1 / 2 frontier
      n = p["k_N"] * flops ** p["a"]
      d = p["k_D"] * flops ** p["b"]
      out = {"params": float(n), "tokens": float(d), "loss": None}
      s = fit.samples
      if s and "k_N" in s:
        out["intervals"] = {"params": _interval(s["k_N"] * flops ** s["a"], fit.ci),
                            "tokens": _interval(s["k_D"] * flops ** s["b"], fit.ci)}
      return out
    raise ScalingError(f"{self.name}: a {fit.law} fit has no compute-optimal allocation; plan "
                       "with a chinchilla fit (approach 1, 2 or 3) or a published law")


def _interval(v, ci: float) -> list[float]:
  v = np.asarray(v, np.float64)
  v = v[np.isfinite(v)]
  return [float(np.percentile(v, 50 * (1 - ci))), float(np.percentile(v, 50 * (1 + ci)))]


def overtrain(p: dict, flops: float, inference_tokens: float, k: float = 6.0,
              k_inference: float = 2.0) -> dict:
  """Sardana et al. 2023 ('Beyond Chinchilla-optimal'), Sec. 2: for the loss the
  Chinchilla-optimal model reaches at `flops`, the (N, D) minimising training plus inference
  FLOPs, k N D + k_inf N D_inf (6 and 2 FLOPs per parameter and token), on the Chinchilla law
  L = E + A/N^alpha + B/D^beta with parameters `p`.
  """
  E, A, B, al, be = p["E"], p["A"], p["B"], p["alpha"], p["beta"]
  o = laws_lib.chinchilla_optimal(E, A, B, al, be, flops, k)
  target = float(o["loss"])
  n_opt = float(o["params"])
  # On the iso-loss curve D(N) = (B / (target - E - A N^-alpha))^(1/beta), defined while the
  # bracket is positive; search N on a fine log grid below and around N_opt, then refine.
  n_min = (A / (target - E)) ** (1 / al) * 1.0001

  def total(n):
    gap = target - E - A * n ** (-al)
    d = np.where(gap > 0, (B / np.maximum(gap, 1e-300)) ** (1 / be), np.inf)
    return k * n * d + k_inference * n * inference_tokens, d

  grid = np.geomspace(n_min, n_opt * 2, 4001)
  for _ in range(3):
    t, _ = total(grid)
    i = int(np.argmin(t))
    grid = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 401)
  t, d = total(grid)
  i = int(np.argmin(t))
  chin_total = k * n_opt * float(o["tokens"]) + k_inference * n_opt * inference_tokens
  return {"inference_tokens": inference_tokens, "target_loss": target,
          "params": float(grid[i]), "tokens": float(d[i]),
          "train_flops": float(k * grid[i] * d[i]),
          "total_flops": float(t[i]), "chinchilla_total_flops": float(chin_total),
          "saving": float(1 - t[i] / chin_total),
          "tokens_per_param": float(d[i] / grid[i]),
          "source": "Sardana et al. 2023, 'Beyond Chinchilla-optimal', Sec. 2"}


def memory(config_spec: str, mesh: str | None) -> dict:
  """Training memory per device of a model config (`configs/dense.py:llama2_7b`) on a mesh
  (`data:8,model:1,expert:1`), from `scaling.accounting` (the one source of counts)."""
  from scaling import accounting
  from scaling.config import load, validate
  from scaling.parallel.mesh import parse_mesh_flag

  cfg = validate(load(config_spec))
  shape = parse_mesh_flag(mesh) if mesh else {"data": 1, "model": 1, "expert": 1}
  breakdown = accounting.memory_per_device(cfg, shape)
  return {"memory_per_device_bytes": breakdown["total"], "breakdown_bytes": breakdown,
          "config": config_spec, "mesh": shape,
          "params_non_embedding": accounting.param_counts(cfg.model)["params_non_embedding"]}


def plan(law: str, flops: float, *, hardware_name: str | None = None, mfu: float = 0.4,
         devices: int = 1, inference_tokens: float | None = None,
         flops_per_param_token: float = 6.0) -> dict:
  """Everything `scaling plan` prints, as a dict (the `--json` object).

  Keys: `law`, `flops`, `params` (N_opt), `tokens` (D_opt), `loss` (None when the law has no
  loss), `intervals` (when the fit has bootstrap samples), `time` (with hardware),
  `overtrain` (with inference tokens and a Chinchilla-form law).
  """
  if not flops > 0:
    raise ScalingError(f"--flops={flops} must be positive")
  src = LawSource(law)
  opt = src.optimal(flops, flops_per_param_token)
  out = {"law": src.name, "law_source": src.source, "flops": flops,
         "params": opt["params"], "tokens": opt["tokens"], "loss": opt.get("loss"),
         "tokens_per_param": opt["tokens"] / opt["params"]}
  if "intervals" in opt:
    out["intervals"] = opt["intervals"]
  if hardware_name:
    out["time"] = training_time(flops, hardware_name, mfu, devices)
  if inference_tokens:
    p = src.chinchilla_params
    if p is None:
      raise ScalingError("--inference-tokens needs a law with a loss surface L(N, D) "
                         "(hoffmann2022, besiroglu2024 or an approach-3 fit)")
    out["overtrain"] = overtrain(p, flops, inference_tokens, flops_per_param_token)
  return out
