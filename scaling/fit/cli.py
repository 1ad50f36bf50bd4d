"""`scaling fit` and `scaling plan`: argparse front ends called in-process by scaling/cli.py.

They use argparse, not absl flags, because other sub-commands own absl's global flags and tests
call these functions directly. User mistakes raise `ScalingError`; the dispatcher prints them as
one `error:` line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import core, published
from scaling.fit import table as table_lib


class _Parser(argparse.ArgumentParser):
  """argparse that raises ScalingError instead of exiting, so in-process callers get status 2."""

  def error(self, message):
    raise ScalingError(f"{self.prog}: {message}")


def _fit_parser() -> argparse.ArgumentParser:
  p = _Parser(prog="scaling fit", description="Fit a scaling law to a results table.")
  p.add_argument("table", help="CSV, JSON lines, or a ladder workdir (DIR/runs/*/result.json)")
  p.add_argument("--law", default="chinchilla",
                 help="chinchilla | kaplan | power | moe (also clark, krajewski, kaplan_nd)")
  p.add_argument("--approach", type=int, choices=(1, 2, 3), default=3,
                 help="Chinchilla approach (default 3)")
  p.add_argument("--method", default="grid", choices=("grid", "varpro"),
                 help="approach 3 optimiser: Hoffmann's grid + L-BFGS, or variable projection")
  p.add_argument("--x", default=None, choices=("params", "tokens", "flops"),
                 help="variable of a single-variable law (power, kaplan); kaplan without --x "
                      "fits the joint L(N, D) form")
  p.add_argument("--moe", default=None, choices=("clark", "krajewski"),
                 help="MoE law (default krajewski if the table has 'granularity', else clark)")
  p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--columns", action="append", default=None,
                 help='map documented names to the table\'s: params="Model Size",flops=C')
  p.add_argument("--filter", action="append", default=[], metavar="COL=VALUE",
                 help="keep rows whose column equals VALUE (repeatable)")
  p.add_argument("--drop-highest-loss", type=int, default=0,
                 help="drop the K highest-loss rows first (Besiroglu et al. 2024 used 5)")
  p.add_argument("--predict-flops", type=float, default=None,
                 help="budget (FLOPs) for the N_opt/D_opt/loss prediction; default 10x max C")
  p.add_argument("--flops-per-token", type=float, default=6.0,
                 help="k in C = k N D for the compute-optimal frontier (default 6)")
  p.add_argument("--holdout-above", type=float, default=None,
                 help="extrapolation check: fit runs with C <= this many FLOPs, predict the rest")
  p.add_argument("--curve-loss", default="loss", help="metrics.jsonl key for approach 1 curves")
  p.add_argument("--out", default=None, help="write fit.json, report.md and plots here")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  return p


def _load(args) -> table_lib.Table:
  table = table_lib.load_table(args.table, args.columns)
  for f in args.filter:
    col, sep, value = f.partition("=")
    if not sep:
      raise ScalingError(f"--filter {f!r} must look like COL=VALUE")
    table = table.where(**{col: value})
  return table.drop_highest_loss(args.drop_highest_loss)


def _law_name(args, table) -> str:
  law = args.law
  if law == "moe":
    return args.moe or ("krajewski" if table.get("granularity") is not None else "clark")
  if law == "kaplan" and args.x is None:
    return "kaplan_nd"
  if law in ("power", "kaplan") and args.x is None:
    raise ScalingError(f"--law={law} needs --x=params|tokens|flops")
  if law not in ("chinchilla", "power", "kaplan", "kaplan_nd", "clark", "krajewski"):
    raise ScalingError(f"unknown --law={law!r}: choose chinchilla, kaplan, power or moe")
  return law


def run_fit(args) -> tuple[core.Fit, table_lib.Table | None]:
  """Fits according to parsed arguments; returns the fit and the table (None for curves)."""
  from scaling.fit import chinchilla

  if args.law == "chinchilla" and args.approach == 1:
    curves = table_lib.load_curves(args.table, args.curve_loss)
    return chinchilla.approach1(curves, bootstrap=args.bootstrap, seed=args.seed,
                                predict_flops=args.predict_flops), None
  table = _load(args)
  if args.law == "chinchilla" and args.approach == 2:
    return chinchilla.approach2(table, bootstrap=args.bootstrap, seed=args.seed,
                                predict_flops=args.predict_flops), table
  law = _law_name(args, table)
  if law == "chinchilla":
    fit = chinchilla.approach3(table, method=args.method, bootstrap=args.bootstrap,
                               seed=args.seed, predict_flops=args.predict_flops,
                               flops_per_param_token=args.flops_per_token)
  else:
    fit = core.fit_law(table, law, x=args.x, bootstrap=args.bootstrap, seed=args.seed)
    fit.approach = None
  if args.holdout_above is not None:
    fit.info["extrapolation"] = core.extrapolation_check(
        table, _refitter(law, args), args.holdout_above)
  return fit, table


def _refitter(law: str, args):
  def fitter(train):
    f, _ = core.fit_grid(train, law, x=args.x)
    theta = np.asarray(f.info["theta"])
    from scaling.fit import laws
    return lambda held: laws.predict(law, theta, core.design(held, law, args.x))
  return fitter


def _human(fit: core.Fit) -> str:
  iv = fit.intervals()
  out = [f"law: {fit.law}" + (f"  approach: {fit.approach}" if fit.approach else "")
         + f"  method: {fit.method}  points: {fit.n_points}"]
  for k, v in list(fit.params.items()) + list(fit.derived.items()):
    lo_hi = iv.get(k)
    ci = f"  [{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]" if lo_hi else ""
    out.append(f"  {k:18s} {v:.6g}{ci}" if isinstance(v, float) else f"  {k:18s} {v}")
  ex = fit.info.get("extrapolation")
  if ex:
    out.append(f"  extrapolation above {ex['threshold_flops']:.3g} FLOPs: mean |rel err| "
               f"{ex['mean_abs_rel_error']:.2%} over {ex['n_test']} runs")
  return "\n".join(out)


def write_outputs(fit: core.Fit, table, out_dir: str) -> list[str]:
  """fit.json (with bootstrap samples), plots (PNG + PDF) and report.md in `out_dir`."""
  from scaling.fit import plots, report

  os.makedirs(out_dir, exist_ok=True)
  pngs = []
  stem = os.path.join(out_dir, "plots")
  if fit.law == "chinchilla" and fit.approach == 2 and table is not None:
    pngs.append(plots.isoflops(table, fit, os.path.join(stem, "isoflops"))[0])
  if fit.law == "chinchilla" and fit.approach == 3 and table is not None:
    pngs.append(plots.frontier(table, fit, os.path.join(stem, "frontier"))[0])
    pngs.append(plots.residuals(table, fit, os.path.join(stem, "residuals"))[0])
  if fit.law == "chinchilla":
    pngs.append(plots.optimal_allocation(fit, os.path.join(stem, "optimal_allocation"))[0])
  if fit.law in ("clark", "krajewski") and table is not None:
    pngs.append(plots.moe_experts(table, fit, os.path.join(stem, "moe_experts"))[0])
  path = os.path.join(out_dir, "fit.json")
  tmp = path + ".tmp"
  with open(tmp, "w") as fh:  # atomic: write aside, then rename (DESIGN.md conventions)
    json.dump(fit.to_json(include_samples=True), fh, indent=1)
  os.replace(tmp, path)
  with open(os.path.join(out_dir, "report.md"), "w") as fh:
    fh.write(report.markdown(fit, pngs, out_dir))
  return [path, os.path.join(out_dir, "report.md")] + pngs


def fit_main(argv: list[str]) -> int:
  """`scaling fit TABLE_OR_WORKDIR --law=... [--approach=N] [--bootstrap=K] [--json]
  [--out=DIR]`."""
  args = _fit_parser().parse_args(argv)
  fit, table = run_fit(args)
  written = write_outputs(fit, table, args.out) if args.out else []
  if args.json:
    obj = fit.to_json()
    if written:
      obj["written"] = written
    print(json.dumps(obj))
  else:
    print(_human(fit))
    for w in written:
      print(f"wrote {w}")
  return 0


def _plan_parser() -> argparse.ArgumentParser:
  p = _Parser(prog="scaling plan",
              description="Compute-optimal model size, tokens and loss for a budget.")
  p.add_argument("--flops", type=float, default=None, help="training budget C (FLOPs)")
  p.add_argument("--gpu-hours", type=float, default=None, help="budget in device-hours")
  p.add_argument("--hardware", default=None, help=f"one of {', '.join(sorted(_peaks()))}")
  p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (default 0.4)")
  p.add_argument("--devices", type=int, default=1, help="devices training in parallel")
  p.add_argument("--law", default="hoffmann2022",
                 help=f"published law ({', '.join(published.LAWS)}) or a FIT.json")
  p.add_argument("--flops-per-token", type=float, default=6.0, help="k in C = k N D")
  p.add_argument("--inference-tokens", type=float, default=None,
                 help="lifetime inference tokens, for the over-training trade-off")
  p.add_argument("--config", default=None, help="model config, for memory per device")
  p.add_argument("--mesh", default=None, help="mesh for memory, e.g. data:8,model:1")
  p.add_argument("--json", action="store_true", help="print one JSON object")
  return p


def _peaks():
  from scaling import hardware
  return hardware.PEAKS


def plan_main(argv: list[str]) -> int:
  """`scaling plan --flops=C | --gpu-hours=H --hardware=NAME [--mfu=0.4] [--law=NAME|FIT.json]`."""
  from scaling.fit import plan

  args = _plan_parser().parse_args(argv)
  if (args.flops is None) == (args.gpu_hours is None):
    raise ScalingError("give exactly one of --flops=C or --gpu-hours=H (with --hardware)")
  if args.gpu_hours is not None:
    if not args.hardware:
      raise ScalingError("--gpu-hours needs --hardware (e.g. --hardware=h100)")
    flops = plan.budget_from_gpu_hours(args.gpu_hours, args.hardware, args.mfu)
  else:
    flops = args.flops
  out = plan.plan(args.law, flops, hardware_name=args.hardware, mfu=args.mfu,
                  devices=args.devices, inference_tokens=args.inference_tokens,
                  flops_per_param_token=args.flops_per_token)
  if args.config:
    out["memory"] = plan.memory(args.config, args.mesh)
  if args.json:
    print(json.dumps(out))
    return 0
  iv = out.get("intervals", {})

  def line(name, key, unit):
    v = out.get(key)
    if v is None:
      return f"  {name:10s} —"
    ci = f"  [{iv[key][0]:.3g}, {iv[key][1]:.3g}]" if key in iv else ""
    return f"  {name:10s} {v:.4g} {unit}{ci}"

  print(f"law: {out['law']}  ({out['law_source']})")
  print(f"  budget     {flops:.4g} FLOPs")
  print(line("N_opt", "params", "parameters"))
  print(line("D_opt", "tokens", "tokens"))
  print(line("loss", "loss", "nats/token"))
  if "time" in out:
    t = out["time"]
    print(f"  time       {t['device_hours']:.4g} {t['hardware']}-hours at MFU {t['mfu']}; "
          f"{t['wall_hours']:.4g} h on {t['devices']} devices")
  if "overtrain" in out:
    o = out["overtrain"]
    print(f"  over-train N={o['params']:.4g}, D={o['tokens']:.4g} ({o['tokens_per_param']:.0f} "
          f"tokens/param) saves {o['saving']:.1%} of training+inference FLOPs")
  if "memory" in out:
    mem = out["memory"]
    print(f"  memory     {mem['memory_per_device_bytes'] / 2**30:.2f} GiB per device for "
          f"{mem['config']} on mesh {mem['mesh']}")
  return 0


if __name__ == "__main__":
  sys.exit(fit_main(sys.argv[1:]))
