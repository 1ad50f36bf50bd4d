"""`scaling fit` and `scaling plan`, called in-process by scaling/cli.py.

They parse like every other command (`scaling.commands.common.parse`: absl flags on a fresh
FlagValues per call, `--flag value` or `--flag=value`, positionals anywhere, `--help`). User
mistakes raise `ScalingError`; the dispatcher prints them as one `error:` line and exits 2.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

from absl import flags

from scaling.commands.common import command, parse
from scaling.errors import ScalingError
from scaling.fit import core, hparam_laws, published, variants
from scaling.fit import table as table_lib


def _positive(fv, *names: str) -> None:
  """Float flags that must be > 0 when given (absl bounds are inclusive)."""
  for name in names:
    flags.register_validator(name, lambda v: v is None or v > 0,
                             message="must be a positive number", flag_values=fv)


def _define_fit(fv) -> None:
  flags.DEFINE_string("law", "chinchilla", "chinchilla | kaplan | power | moe (also clark, "
                      "krajewski, kaplan_nd) | lr | batch (optimal learning rate lr*(N, D), "
                      "batch B*(C), from per-rung sweeps).", flag_values=fv)
  flags.DEFINE_bool("all-variants", False, "Fit every variant of a hyperparameter sweep, not "
                    "only each rung's best (sweep_best).", flag_values=fv)
  flags.DEFINE_integer("approach", 3, "Chinchilla approach: 1 (training curves), 2 (IsoFLOP "
                       "minima) or 3 (parametric fit).", lower_bound=1, upper_bound=3,
                       flag_values=fv)
  flags.DEFINE_enum("method", "grid", ("grid", "varpro"), "Approach 3 optimiser: Hoffmann's "
                    "grid + L-BFGS, or variable projection.", flag_values=fv)
  flags.DEFINE_enum("x", None, ("params", "tokens", "flops"), "Variable of a single-variable "
                    "law (power, kaplan); kaplan without --x fits the joint L(N, D) form.",
                    flag_values=fv)
  flags.DEFINE_enum("moe", None, ("clark", "krajewski"), "MoE law (default krajewski if the "
                    "table has 'granularity', else clark).", flag_values=fv)
  flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples (0: none).", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the bootstrap resampling.", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_enum("resample", "runs", ("runs", "residuals"), "What the bootstrap resamples: "
                    "runs (pairs; any table) or the fit's residuals (a designed ladder, whose "
                    "N and D were chosen; grid method).", flag_values=fv)
  flags.DEFINE_multi_string("columns", None, "Map documented names to the table's: "
                            'params="Model Size",flops=C.', flag_values=fv)
  flags.DEFINE_multi_string("filter", None, "COL=VALUE: keep rows whose column equals VALUE.",
                            flag_values=fv)
  flags.DEFINE_integer("drop-highest-loss", 0, "Drop the K highest-loss rows first (Besiroglu "
                       "et al. 2024 used 5).", lower_bound=0, flag_values=fv)
  flags.DEFINE_float("predict-flops", None, "Budget (FLOPs) for the N_opt/D_opt/loss "
                     "prediction; default 10x max C.", flag_values=fv)
  flags.DEFINE_float("flops-per-token", 6.0, "k in C = k N D for the compute-optimal "
                     "frontier.", flag_values=fv)
  flags.DEFINE_float("holdout-above", None, "Extrapolation check: fit runs with C <= this many "
                     "FLOPs, predict the rest.", flag_values=fv)
  flags.DEFINE_string("curve-loss", "loss", "metrics.jsonl key for approach 1 curves.",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "Write fit.json, report.md and plots here.", flag_values=fv)
  flags.DEFINE_bool("json", False, "Print one JSON object.", flag_values=fv)
  flags.DEFINE_bool("strict", False, "A ladder workdir with an unreadable result.json is an "
                    "error (exit 2) instead of a named, counted skip.", flag_values=fv)
  _positive(fv, "predict-flops", "flops-per-token", "holdout-above")


FIT_USAGE = ("scaling fit TABLE_OR_WORKDIR [--law=chinchilla|kaplan|power|moe] [--approach=1|2|3] "
             "[--bootstrap=K] [--out=DIR] [--json] [flags]")


def parse_fit_args(argv: list[str]) -> SimpleNamespace:
  """`scaling fit` flags as attributes (`args.drop_highest_loss`, `args.table`), plus
  `args.argv`: the arguments exactly as given, for the fit's provenance."""
  parsed = parse(argv, _define_fit, prog="scaling fit", usage=FIT_USAGE, nargs=(1, 1),
                 description="Fit a scaling law to a results table: a CSV, JSON lines, or a "
                 "ladder workdir (DIR/runs/*/result.json).")
  return _namespace(parsed, table=parsed.args[0])


def _namespace(parsed, **extra) -> SimpleNamespace:
  """Flag values by attribute, dashes as underscores; repeatable flags given nowhere are []."""
  fv = parsed.fv
  values = {}
  for name in fv:
    value = fv[name].value
    if isinstance(fv[name], flags.MultiFlag) and value is None:
      value = []
    values[name.replace("-", "_")] = value
  return SimpleNamespace(**values, argv=list(parsed.argv), **extra)


def _load(args) -> table_lib.Table:
  # A wsd trunk's mid-run points enter a fit only when asked for: --filter point=...
  asked = any(f.partition("=")[0] == "point" for f in args.filter)
  table = table_lib.load_table(args.table, args.columns, strict=getattr(args, "strict", False),
                               mid_run=asked)
  for f in args.filter:
    col, sep, value = f.partition("=")
    if not sep:
      raise ScalingError(f"--filter {f!r} must look like COL=VALUE")
    table = table.where(**{col: value})
  table = variants.select(table, args)  # each rung's best variant, unless --all-variants
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
    raise ScalingError(f"unknown --law={law!r}: choose chinchilla, kaplan, power, moe, lr or "
                       "batch")
  return law


def run_fit(args) -> tuple[core.Fit, table_lib.Table | None]:
  """Fits according to parsed arguments; returns the fit and the table (None for curves)."""
  from scaling.fit import checks, chinchilla, provenance, validation

  if args.resample != "runs" and (args.law in hparam_laws.LAWS or args.approach in (1, 2)):
    raise ScalingError(f"--resample={args.resample} is implemented for parametric fits "
                       "(approach 3 and the other laws); drop it, or use --approach=3")
  if args.law in hparam_laws.LAWS:
    return hparam_laws.run_fit(args, _load)
  if args.law == "chinchilla" and args.approach == 1:
    curves = table_lib.load_curves(args.table, args.curve_loss,
                                   strict=getattr(args, "strict", False))
    curves, held = validation.split_curves(curves, args.table, args.holdout_above)
    fit = chinchilla.approach1(curves, bootstrap=args.bootstrap, seed=args.seed,
                               predict_flops=args.predict_flops)
    if held:
      fit.info["validation_note"] = (f"{len(held)} held-out run(s) left out of the fit; "
                                     "Approach 1 predicts no loss, so none is scored")
    fit.checks = checks.run_checks(fit, None)
    fit.provenance = provenance.from_args(args, fit, held_ids=held)
    return fit, None
  # Held-out runs (column `holdout`, or C above --holdout-above) are left out of `table`, the
  # rows fitted, and predicted afterwards into `fit.validation`.
  sp = validation.split(_load(args), args.holdout_above)
  table = sp.fit_table
  if args.law == "chinchilla" and args.approach == 2:
    fit = chinchilla.approach2(table, bootstrap=args.bootstrap, seed=args.seed,
                               predict_flops=args.predict_flops)
    fit.validation = validation.validate(fit, sp, level=fit.ci, seed=args.seed)
    fit.checks = checks.run_checks(fit, table)
    fit.provenance = provenance.from_args(args, fit, sp)
    return fit, table
  law = _law_name(args, table)
  if law == "chinchilla":
    fit = chinchilla.approach3(table, method=args.method, bootstrap=args.bootstrap,
                               seed=args.seed, predict_flops=args.predict_flops,
                               flops_per_param_token=args.flops_per_token,
                               resample=args.resample)
  else:
    fit = core.fit_law(table, law, x=args.x, bootstrap=args.bootstrap, seed=args.seed,
                       resample=args.resample)
    fit.approach = None
  fit.validation = validation.validate(fit, sp, level=fit.ci, seed=args.seed)
  extrapolation = validation.extrapolation_summary(fit, sp)  # --holdout-above's summary
  if extrapolation is not None:
    fit.info["extrapolation"] = extrapolation
  fit.checks = checks.run_checks(fit, table)
  fit.provenance = provenance.from_args(args, fit, sp)
  return fit, table


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
  g = fit.goodness
  if g:
    out.append(f"  goodness: R^2 {g['r2']:.4f} of log loss, RMSE of log loss {g['rmse_log']:.4g}"
               f" ({g['n']} runs, {g['dof']} degrees of freedom)")
  if fit.checks:
    bad = [c["name"] for c in fit.checks if not c["ok"]]
    out.append(f"  checks: {len(fit.checks) - len(bad)} of {len(fit.checks)} ok"
               + (f"; failed: {', '.join(bad)} (warnings on stderr)" if bad else ""))
  return "\n".join(out)


def write_outputs(fit: core.Fit, table, out_dir: str) -> list[str]:
  """fit.json (with bootstrap samples), plots (PNG + PDF) and report.md in `out_dir`."""
  from scaling import storage
  from scaling.fit import plots, provenance, report

  os.makedirs(out_dir, exist_ok=True)
  pngs = plots.for_fit(fit, table, os.path.join(out_dir, "plots"))
  path = os.path.join(out_dir, "fit.json")
  provenance.write_fit_json(path, fit.to_json(include_samples=True))  # atomic
  storage.write_text(os.path.join(out_dir, "report.md"), report.markdown(fit, pngs, out_dir))
  return [path, os.path.join(out_dir, "report.md")] + pngs


@command
def fit_main(argv: list[str]) -> int:
  """`scaling fit TABLE_OR_WORKDIR --law=... [--approach=N] [--bootstrap=K] [--json]
  [--out=DIR]`."""
  args = parse_fit_args(argv)
  fit, table = run_fit(args)
  for c in fit.checks:  # one line per failed self-check, with its fix
    if not c["ok"]:
      print(f"warning: {c['name']}: {c['detail']}", file=sys.stderr)
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


def _define_plan(fv) -> None:
  flags.DEFINE_float("flops", None, "Training budget C (FLOPs).", flag_values=fv)
  flags.DEFINE_float("gpu-hours", None, "Budget in device-hours (with --hardware).",
                     flag_values=fv)
  flags.DEFINE_string("hardware", None, f"One of {', '.join(sorted(_peaks()))}.",
                      flag_values=fv)
  flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation, in (0, 1].", upper_bound=1.0,
                     flag_values=fv)
  flags.DEFINE_integer("devices", 1, "Devices training in parallel.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_string("law", "hoffmann2022", f"Published law ({', '.join(published.LAWS)}) "
                      "or a FIT.json.", flag_values=fv)
  flags.DEFINE_float("flops-per-token", 6.0, "k in C = k N D.", flag_values=fv)
  flags.DEFINE_float("inference-tokens", None, "Lifetime inference tokens, for the "
                     "over-training trade-off.", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_string("config", None, "Model config, for memory per device "
                      "(configs/dense.py:llama2_7b).", flag_values=fv)
  flags.DEFINE_string("mesh", None, "Mesh for memory, e.g. data:8,model:1.", flag_values=fv)
  flags.DEFINE_bool("json", False, "Print one JSON object.", flag_values=fv)
  _positive(fv, "gpu-hours", "mfu", "flops-per-token")


PLAN_USAGE = ("scaling plan --flops=C | --gpu-hours=H --hardware=NAME [--mfu=0.4] "
              "[--law=NAME|FIT.json] [--inference-tokens=T] [--config=... --mesh=...] [--json]")


def parse_plan_args(argv: list[str]) -> SimpleNamespace:
  """`scaling plan` flags as attributes (`args.gpu_hours`), plus `args.argv`."""
  return _namespace(parse(argv, _define_plan, prog="scaling plan", usage=PLAN_USAGE,
                          description="Compute-optimal model size, tokens and loss for a "
                          "budget."))


def _peaks():
  from scaling import hardware
  return hardware.PEAKS


@command
def plan_main(argv: list[str]) -> int:
  """`scaling plan --flops=C | --gpu-hours=H --hardware=NAME [--mfu=0.4] [--law=NAME|FIT.json]`."""
  from scaling.fit import plan

  args = parse_plan_args(argv)
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
  if plan.LawSource(args.law).fit is not None:  # a fit.json: say where its law came from
    from scaling.fit import provenance
    out["provenance_summary"] = provenance.summary(provenance.load_fit_json(args.law))
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
  if "provenance_summary" in out:
    print(f"  {out['provenance_summary']}")
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
