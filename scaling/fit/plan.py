"""Compute-optimal planning: N_opt, D_opt and loss for a budget; what the run costs in time,
money, energy and CO2; inference-aware, data-constrained and MoE allocations.

- `plan` is everything `scaling plan` prints, as a dict (its `--json`).
- Costs: `scaling.fit.costs` (Patterson et al. 2021). Inference: `overtrain` (FLOPs) and
  `cost_optimal` (dollars), Sardana et al. 2024. Repeated data: `scaling.fit.data_constrained`
  (Muennighoff et al. 2023). MoE: `scaling.fit.moe_plan`. Budget sweeps and their plot:
  `scaling.fit.plan_sweep`.

Units: FLOPs, parameters, tokens, seconds/hours/days, bytes, USD; loss in the law's nats/token.
"""

from __future__ import annotations

import json
import os

import numpy as np

from scaling import hardware
from scaling.errors import ScalingError
from scaling.fit import costs, published
from scaling.fit import laws as laws_lib
from scaling.fit.core import Fit

MOE_LAWS = ("clark", "krajewski")
SARDANA = "Sardana et al. 2024, 'Beyond Chinchilla-optimal' (arXiv:2401.00448)"


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


def resolve_budget(*, flops: float | None = None, gpu_hours: float | None = None,
                   days: float | None = None, params: float | None = None,
                   tokens: float | None = None, hardware_name: str | None = None,
                   mfu: float = 0.4, mfu_given: bool = False, devices: int = 1,
                   k: float = 6.0) -> dict:
  """The budget C, the MFU and the run (N, D) from the flags that state them.

  Compute is stated by `--flops` or `--params --tokens` (C = k N D); time by `--gpu-hours` or
  `--days` (x `--devices`). Given one, the other follows at `--mfu`; given both, the MFU is the
  one they imply (and `--mfu` must not be given too).

  Returns `flops`, `mfu`, `mfu_source` (`--mfu`, `default`, or what implied it) and `run`
  ((N, D) or None).
  """
  if (params is None) != (tokens is None):
    raise ScalingError("--params and --tokens go together: give both (C = k N D) or neither")
  run = (float(params), float(tokens)) if params is not None else None
  if run and flops is not None:
    raise ScalingError("give --flops=C or --params=N --tokens=D, not both")
  if gpu_hours is not None and days is not None:
    raise ScalingError("give --gpu-hours=H or --days=D (with --devices), not both")
  compute = flops if flops is not None else (k * run[0] * run[1] if run else None)
  hours = gpu_hours if gpu_hours is not None else (
      days * 24.0 * devices if days is not None else None)
  time_flag = "--gpu-hours" if gpu_hours is not None else "--days"
  if hours is not None and not hardware_name:
    raise ScalingError(f"{time_flag} needs --hardware (e.g. --hardware=h100)")
  if compute is None and hours is None:
    raise ScalingError("give a budget: --flops=C, --params=N --tokens=D, or --gpu-hours=H / "
                       "--days=D with --hardware")
  source = "--mfu" if mfu_given else "default"
  if compute is not None and hours is not None:
    if mfu_given:
      raise ScalingError(f"--mfu with both a compute ({'--flops' if flops else '--params'}) "
                         f"and a time ({time_flag}) over-states the run: drop --mfu, which "
                         "they imply")
    what = (f"--gpu-hours={gpu_hours:g}" if gpu_hours is not None
            else f"--days={days:g} on {devices} devices")
    mfu = costs.implied_mfu(compute, hardware_name, hours, what)
    source = f"implied by {what}"
  elif compute is None:
    if gpu_hours is not None:
      compute = budget_from_gpu_hours(gpu_hours, hardware_name, mfu)
    else:
      compute = hours * 3600.0 * hardware.peak_flops(hardware_name) * mfu
  if not compute > 0:
    raise ScalingError(f"--flops={compute} must be positive")
  return {"flops": float(compute), "mfu": float(mfu), "mfu_source": source, "run": run}


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
      if not isinstance(obj, dict) or "params" not in obj or "law" not in obj:
        raise ScalingError(f"--law={spec}: not a fit JSON from `scaling fit` (no 'params'/'law')")
      self.fit = Fit.from_json(obj)
      self.name = spec
      approach = f", approach {self.fit.approach}" if self.fit.approach else ""
      self.source = f"fit {spec} ({self.fit.law}{approach})"
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

  @property
  def moe_law(self) -> str | None:
    """`clark` or `krajewski` for an MoE fit, else None."""
    return self.fit.law if self.fit is not None and self.fit.law in MOE_LAWS else None

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


def _iso_loss_argmin(p: dict, target: float, n_opt: float, w_train: float,
                     w_serve: float) -> tuple[float, float]:
  """(N, D) on the iso-loss curve L(N, D) = `target` minimising w_train N D + w_serve N.

  D(N) = (B / (target - E - A N^-alpha))^(1/beta), defined while the bracket is positive; the
  search is a fine log grid from that bound to 2 N_opt, refined three times.
  """
  E, A, B, al, be = p["E"], p["A"], p["B"], p["alpha"], p["beta"]
  n_min = (A / (target - E)) ** (1 / al) * 1.0001

  def total(n):
    gap = target - E - A * n ** (-al)
    d = np.where(gap > 0, (B / np.maximum(gap, 1e-300)) ** (1 / be), np.inf)
    return w_train * n * d + w_serve * n, d

  grid = np.geomspace(n_min, n_opt * 2, 4001)
  for _ in range(3):
    t, _ = total(grid)
    i = int(np.argmin(t))
    grid = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 401)
  t, d = total(grid)
  i = int(np.argmin(t))
  return float(grid[i]), float(d[i])


def overtrain(p: dict, flops: float, inference_tokens: float, k: float = 6.0,
              k_inference: float = 2.0) -> dict:
  """Sardana et al. 2024 (arXiv:2401.00448), Sec. 2: for the loss the Chinchilla-optimal model
  reaches at `flops`, the (N, D) minimising training plus inference FLOPs,
  k N D + k_inf N D_inf (6 and 2 FLOPs per parameter and token), on the Chinchilla law
  L = E + A/N^alpha + B/D^beta with parameters `p`.
  """
  o = laws_lib.chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"], flops, k)
  target, n_opt = float(o["loss"]), float(o["params"])
  n, d = _iso_loss_argmin(p, target, n_opt, k, k_inference * inference_tokens)
  total = k * n * d + k_inference * n * inference_tokens
  chin_total = k * n_opt * float(o["tokens"]) + k_inference * n_opt * inference_tokens
  return {"inference_tokens": inference_tokens, "target_loss": target,
          "params": n, "tokens": d, "train_flops": float(k * n * d),
          "total_flops": float(total), "chinchilla_total_flops": float(chin_total),
          "saving": float(1 - total / chin_total), "tokens_per_param": d / n,
          "source": f"{SARDANA}, Sec. 2"}


def inference_prices(flops: float, p: dict, *, hardware_name: str | None, mfu: float,
                     price: float | None, inference_price: float | None,
                     inference_mfu: float | None, k: float = 6.0) -> dict | None:
  """USD per training FLOP and per parameter-token served, or None without a training price.

  Training: price / (3600 peak MFU). Serving costs 2 N FLOPs a token (Sardana et al. 2024,
  Sec. 2), so it is linear in N: from `inference_price` (USD per 1M tokens, read as the price
  of serving the Chinchilla-optimal model N_opt) it is price / 1e6 / N_opt per parameter-token;
  derived, 2 x price / (3600 peak inference_mfu).
  """
  if not hardware_name:
    if inference_price is not None:
      raise ScalingError("--inference-price needs --hardware (and its --price) to weigh the "
                         "training dollars against it")
    return None
  dev = hardware.device(hardware_name)
  hourly = price if price is not None else dev.price_usd_per_hour
  if hourly is None:
    if inference_price is not None:
      raise ScalingError(f"--inference-price: {hardware.canonical(hardware_name)} has no list "
                         "price for the training side; give --price")
    return None
  per_train_flop = hourly / (3600.0 * dev.peak_flops * mfu)
  n_opt = float(laws_lib.chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"],
                                            flops, k)["params"])
  if inference_price is not None:
    per_param_token = inference_price / 1e6 / n_opt
    how = f"--inference-price ${inference_price:g} per 1M tokens for N_opt, scaled by N"
  else:
    imfu = inference_mfu or mfu
    per_param_token = 2.0 * hourly / (3600.0 * dev.peak_flops * imfu)
    how = (f"2N FLOPs a token on {hardware.canonical(hardware_name)} at MFU {imfu:g} and "
           f"${hourly:g}/h")
  return {"usd_per_train_flop": per_train_flop, "usd_per_param_token": per_param_token,
          "usd_per_1m_tokens_at_n_opt": per_param_token * n_opt * 1e6, "how": how}


def cost_optimal(p: dict, flops: float, inference_tokens: float, *, usd_per_train_flop: float,
                 usd_per_param_token: float, k: float = 6.0) -> dict:
  """Sardana et al. 2024, Sec. 3 (cost): at the loss the Chinchilla-optimal model reaches with
  `flops`, the (N, D) minimising training dollars (k N D x USD/FLOP) plus lifetime inference
  dollars (N x `inference_tokens` x USD per parameter-token). Both models side by side."""
  o = laws_lib.chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"], flops, k)
  target, n_opt, d_opt = float(o["loss"]), float(o["params"]), float(o["tokens"])
  n, d = _iso_loss_argmin(p, target, n_opt, k * usd_per_train_flop,
                          usd_per_param_token * inference_tokens)

  def row(n, d):
    train = k * n * d * usd_per_train_flop
    serve = n * inference_tokens * usd_per_param_token
    loss = p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]
    return {"params": n, "tokens": d, "tokens_per_param": d / n, "loss": float(loss),
            "train_flops": k * n * d, "train_usd": train, "inference_usd": serve,
            "total_usd": train + serve}

  chin, best = row(n_opt, d_opt), row(n, d)
  return {"inference_tokens": inference_tokens, "target_loss": target, "chinchilla": chin,
          "cost_optimal": best, "saving": 1 - best["total_usd"] / chin["total_usd"],
          "source": f"{SARDANA}, Sec. 3"}


def memory(config_spec: str, mesh: str | None, *, batch: int = 1, context: int = 4096) -> dict:
  """Training memory per device of a model config (`configs/dense.py:llama2_7b`) on a mesh
  (`data:8,model:1,expert:1`), from `scaling.accounting` (the one source of counts), and the
  memory to serve it (`moe_plan.serving_memory`: every expert resident)."""
  from scaling import accounting
  from scaling.config import load, validate
  from scaling.fit import moe_plan
  from scaling.parallel.mesh import parse_mesh_flag

  cfg = validate(load(config_spec))
  shape = parse_mesh_flag(mesh) if mesh else {"data": 1, "model": 1, "expert": 1}
  breakdown = accounting.memory_per_device(cfg, shape)
  return {"memory_per_device_bytes": breakdown["total"], "breakdown_bytes": breakdown,
          "config": config_spec, "mesh": shape,
          "params_non_embedding": accounting.param_counts(cfg.model)["params_non_embedding"],
          "serving": moe_plan.serving_memory(cfg.model, batch=batch, context=context)}


def _dense(src: LawSource, out: dict, flops: float, k: float, run, unique_tokens) -> None:
  """N_opt, D_opt, loss (and intervals), the given run, and the data-constrained plan."""
  from scaling.fit import data_constrained

  opt = src.optimal(flops, k)
  out.update(params=opt["params"], tokens=opt["tokens"], loss=opt.get("loss"),
             tokens_per_param=opt["tokens"] / opt["params"])
  if "intervals" in opt:
    out["intervals"] = opt["intervals"]
  p = src.chinchilla_params
  if run:
    loss = None
    if p is not None:
      loss = float(p["E"] + p["A"] / run[0] ** p["alpha"] + p["B"] / run[1] ** p["beta"])
    out["run"] = {"params": run[0], "tokens": run[1], "tokens_per_param": run[1] / run[0],
                  "loss": loss}
  if unique_tokens is not None:
    if p is None:
      raise ScalingError("--unique-tokens needs a law with a loss surface L(N, D) "
                         "(hoffmann2022, besiroglu2024 or an approach-3 fit)")
    out["data_constrained"] = data_constrained.plan(p, flops, unique_tokens, k=k, given=run)


def _moe(src: LawSource, out: dict, flops: float, moe: dict) -> None:
  from scaling.fit import moe_plan

  m = moe_plan.plan(src.moe_law, src.fit.params, flops,
                    **{key: v for key, v in moe.items() if v is not None})
  out["moe"] = m
  out.update(params=m["params_active_non_embedding"], tokens=m["tokens"], loss=m["loss"],
             tokens_per_param=m["tokens_per_active_param"])


MOE_FLAGS = ("experts", "granularity", "top_k")


def plan(law: str, flops: float, *, hardware_name: str | None = None, mfu: float = 0.4,
         devices: int = 1, inference_tokens: float | None = None,
         flops_per_param_token: float = 6.0, price: float | None = None,
         watts: float | None = None, pue: float | None = None, carbon: float | None = None,
         inference_price: float | None = None, inference_mfu: float | None = None,
         unique_tokens: float | None = None, run: tuple[float, float] | None = None,
         mfu_source: str = "default", moe: dict | None = None) -> dict:
  """Everything `scaling plan` prints, as a dict (the `--json` object).

  Keys: `law`, `flops`, `params` (N_opt; N_active for an MoE law), `tokens` (D_opt), `loss`
  (None when the law has no loss), `intervals` (fits with bootstrap samples), `run` (with
  `run=(N, D)`); with hardware `device_hours`, `days`, `cost_usd`, `energy_mwh`, `co2_t`,
  `mfu`, `assumptions` (each input's source) and `time`; `overtrain` and `inference` (with
  inference tokens), `data_constrained` (with unique tokens), `moe` (an MoE law; `moe` holds
  its `experts`, `granularity`, `top_k`, `tokens_per_param`, `batch`, `context`).
  """
  if not flops > 0:
    raise ScalingError(f"--flops={flops} must be positive")
  costs.check_inputs(devices=devices, price=price, watts=watts, pue=pue, carbon=carbon)
  src = LawSource(law)
  moe = dict(moe or {})
  out = {"law": src.name, "law_source": src.source, "flops": flops}
  if src.moe_law:
    for name, why in ((inference_tokens, "--inference-tokens"), (unique_tokens,
                      "--unique-tokens"), (run, "--params/--tokens")):
      if name is not None:
        raise ScalingError(f"{why} is planned on a dense law; an MoE fit ({src.moe_law}) "
                           "plans experts and granularity only")
    _moe(src, out, flops, moe)
  else:
    given = [f"--{n.replace('_', '-')}" for n in MOE_FLAGS if moe.get(n) is not None]
    if given:
      raise ScalingError(f"{given[0]} plans an MoE, which needs --law=FIT.json from `scaling "
                         f"fit --law=moe` (clark or krajewski); {src.name} is a dense law")
    _dense(src, out, flops, flops_per_param_token, run, unique_tokens)
  if hardware_name:
    c = costs.run_costs(flops, hardware_name, mfu=mfu, devices=devices, price=price,
                        watts=watts, pue=pue, carbon=carbon)
    out.update({key: c[key] for key in ("device_hours", "days", "cost_usd", "energy_mwh",
                                        "co2_t", "mfu", "assumptions")}, mfu_source=mfu_source)
    out["time"] = training_time(flops, hardware_name, mfu, devices)
  if inference_tokens:
    p = src.chinchilla_params
    if p is None:
      raise ScalingError("--inference-tokens needs a law with a loss surface L(N, D) "
                         "(hoffmann2022, besiroglu2024 or an approach-3 fit)")
    out["overtrain"] = overtrain(p, flops, inference_tokens, flops_per_param_token)
    prices = inference_prices(flops, p, hardware_name=hardware_name, mfu=mfu, price=price,
                              inference_price=inference_price, inference_mfu=inference_mfu,
                              k=flops_per_param_token)
    if prices is None:
      out["inference_note"] = ("no inference dollars: give --hardware with a list price (or "
                               "--price) for the training side")
    else:
      out["inference"] = dict(cost_optimal(
          p, flops, inference_tokens, usd_per_train_flop=prices["usd_per_train_flop"],
          usd_per_param_token=prices["usd_per_param_token"], k=flops_per_param_token),
          prices=prices)
  elif inference_price is not None:
    raise ScalingError("--inference-price needs --inference-tokens=T (lifetime tokens served)")
  return out
