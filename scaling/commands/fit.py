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
from scaling.fit import core, critical_batch, hparam_laws, published, variants
from scaling.fit import table as table_lib


def _positive(fv, *names: str) -> None:
  """Float flags that must be > 0 when given (absl bounds are inclusive)."""
  for name in names:
    flags.register_validator(name, lambda v: v is None or v > 0,
                             message="must be a positive number", flag_values=fv)


TASK_LAWS = ("emergence", "two_stage")


def _define_task_flags(fv) -> None:
  """Flags of the task laws (`--law=emergence|two_stage`, fitted on `scaling eval` evals)."""
  flags.DEFINE_string("task", None, "emergence / two_stage: the task(s), e.g. recall or "
                      "addition3 (default: every task with answer metrics / recall).",
                      flag_values=fv)
  flags.DEFINE_enum("metric", "exact_match", ("exact_match", "token_accuracy"), "two_stage: "
                    "the score stage 2 predicts from the task loss.", flag_values=fv)
  flags.DEFINE_enum("points", "final", ("final", "all"), "emergence: each run's final "
                    "checkpoint, or every evaluated checkpoint.", flag_values=fv)
  flags.DEFINE_integer("noise-checkpoints", 4, "two_stage: the noise floor is the spread of "
                       "each run's score over its last K checkpoints.", lower_bound=2,
                       flag_values=fv)


def _define_fit(fv) -> None:
  flags.DEFINE_string("law", "chinchilla", "chinchilla | kaplan | power | moe (also clark, "
                      "krajewski, kaplan_nd) | lr | batch (optimal learning rate lr*(N, D), "
                      "batch B*(C), from per-rung sweeps) | emergence | two_stage (task "
                      "evals: scaling eval) | critical_batch (B_crit(L) or, with --x=tokens, "
                      "B_crit(D) from logged noise scales).", flag_values=fv)
  _define_task_flags(fv)
  flags.DEFINE_bool("all-variants", False, "Fit every variant of a hyperparameter sweep, not "
                    "only each rung's best (sweep_best).", flag_values=fv)
  flags.DEFINE_integer("approach", 3, "Chinchilla approach: 1 (training curves), 2 (IsoFLOP "
                       "minima) or 3 (parametric fit).", lower_bound=1, upper_bound=3,
                       flag_values=fv)
  flags.DEFINE_enum("method", "grid", ("grid", "varpro"), "Approach 3 optimiser: Hoffmann's "
                    "grid + L-BFGS, or variable projection.", flag_values=fv)
  flags.DEFINE_enum("x", None, ("params", "tokens", "flops", "loss"), "Variable of a "
                    "single-variable law (power, kaplan); kaplan without --x fits the joint "
                    "L(N, D) form; critical_batch: loss (default) or tokens.", flag_values=fv)
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
  table = variants.average_seeds(table, args)  # a rung's seeds: one row, their mean loss
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
    raise ScalingError(f"unknown --law={law!r}: choose chinchilla, kaplan, power, moe, lr, "
                       "batch or critical_batch")
  return law


def run_fit(args) -> tuple[core.Fit, table_lib.Table | None]:
  """Fits according to parsed arguments; returns the fit and the table (None for curves)."""
  from scaling.fit import checks, chinchilla, provenance, validation

  if args.law in critical_batch.LAWS:  # noise scales from metrics.jsonl
    return critical_batch.run_fit(args)
  if args.resample != "runs" and (args.law in hparam_laws.LAWS or args.approach in (1, 2)):
    raise ScalingError(f"--resample={args.resample} is implemented for parametric fits "
                       "(approach 3 and the other laws); drop it, or use --approach=3")
  if args.law in hparam_laws.LAWS:
    return hparam_laws.run_fit(args, _load)
  if args.law in TASK_LAWS:  # from evals.jsonl: scaling/fit/emergence.py, two_stage.py
    from scaling.fit import emergence, two_stage
    return (emergence if args.law == "emergence" else two_stage).run_fit(args), None
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

  if fit.law in TASK_LAWS:
    from scaling.fit import emergence, two_stage
    mod = emergence if fit.law == "emergence" else two_stage
    return emergence.write_outputs(fit, out_dir, mod.plot, mod.markdown)
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
  from scaling.fit import costs

  flags.DEFINE_float("flops", None, "Training budget C (FLOPs).", flag_values=fv)
  flags.DEFINE_float("params", None, "Plan this run: N parameters (with --tokens; C = k N D "
                     "instead of --flops).", flag_values=fv)
  flags.DEFINE_float("tokens", None, "Plan this run: D training tokens (with --params).",
                     flag_values=fv)
  flags.DEFINE_float("gpu-hours", None, "Budget in device-hours (with --hardware); with "
                     "--flops it implies the MFU.", flag_values=fv)
  flags.DEFINE_float("days", None, "Wall-clock days on --devices (with --hardware): the budget "
                     "at --mfu, or with --flops / --params --tokens the MFU it implies.",
                     flag_values=fv)
  flags.DEFINE_string("hardware", None, "Device, for time, cost, energy: "
                      f"{costs.table_help()}.", flag_values=fv)
  flags.DEFINE_float("mfu", 0.4, "Model FLOPs utilisation, in (0, 1].", upper_bound=1.0,
                     flag_values=fv)
  flags.DEFINE_integer("devices", 1, "Devices training in parallel (wall-clock days = "
                       "device-hours / devices / 24).", lower_bound=1, flag_values=fv)
  flags.DEFINE_float("price", None, "USD per device-hour; default the hardware's list price "
                     "(see --hardware, each with its source).", flag_values=fv)
  flags.DEFINE_float("watts", None, "Average power per device (W); default the hardware's "
                     "board power (datasheet TDP; none for TPUs).", flag_values=fv)
  flags.DEFINE_float("pue", None, f"Power usage effectiveness, >= 1; none means "
                     f"{costs.DEFAULT_PUE:g} ({costs.PUE_SOURCE}).", flag_values=fv)
  flags.DEFINE_float("carbon", None, "kg CO2e per kWh; none means "
                     f"{costs.DEFAULT_CARBON:g} ({costs.CARBON_SOURCE}).", flag_values=fv)
  flags.DEFINE_string("law", "hoffmann2022", f"Published law ({', '.join(published.LAWS)}) "
                      "or a FIT.json (an MoE fit plans experts and granularity).",
                      flag_values=fv)
  flags.DEFINE_float("flops-per-token", 6.0, "k in C = k N D.", flag_values=fv)
  flags.DEFINE_float("inference-tokens", None, "Lifetime inference tokens, for the "
                     "over-training trade-off (Sardana et al. 2024).", lower_bound=0.0,
                     flag_values=fv)
  flags.DEFINE_float("inference-price", None, "USD per 1M tokens served by the "
                     "Chinchilla-optimal model (other sizes scale with N); none: derived as "
                     "2N FLOPs a token on --hardware at --inference-mfu and --price.",
                     flag_values=fv)
  flags.DEFINE_float("inference-mfu", None, "MFU of serving, for the derived inference price; "
                     "none means --mfu.", upper_bound=1.0, flag_values=fv)
  flags.DEFINE_float("unique-tokens", None, "Unique tokens available: plan repeated epochs "
                     "(Muennighoff et al. 2023, Eq. 5-6).", flag_values=fv)
  flags.DEFINE_integer("experts", None, "MoE law: routed experts E (Krajewski: fixed, 8 when "
                       "not given; Clark: searched over 1..64 when not given).", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("granularity", None, "MoE law (Krajewski): granularity G; searched over "
                       "1..32 when not given.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("top-k", None, "MoE law: experts per token at G = 1 (1 when not given).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_float("tokens-per-param", None, "MoE law (Clark, which has no D): training "
                     "tokens per active parameter of the fitted runs (20 when not given).",
                     flag_values=fv)
  flags.DEFINE_integer("serve-batch", 1, "Sequences served at once, for the KV cache of the "
                       "serving memory.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("serve-context", 4096, "Context length served, for the KV cache.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_string("config", None, "Model config, for training memory per device and "
                      "serving memory (configs/dense.py:llama2_7b).", flag_values=fv)
  flags.DEFINE_string("mesh", None, "Mesh for memory, e.g. data:8,model:1.", flag_values=fv)
  flags.DEFINE_string("critical-batch", None, "A `scaling fit --law=critical_batch` fit.json: "
                      "propose the global batch (B_crit at the planned run) and its steps.",
                      flag_values=fv)
  flags.DEFINE_integer("seq-len", 2048, "Tokens per sequence, for the proposed batch in "
                       "sequences (--critical-batch).", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("sweep", None, "LO:HI[:POINTS]: plan every budget from LO to HI FLOPs "
                      "(default one per decade), e.g. 1e18:1e26.", flag_values=fv)
  flags.DEFINE_string("plot", None, "With --sweep: write the figure to this .png.",
                      flag_values=fv)
  flags.DEFINE_bool("json", False, "Print one JSON object.", flag_values=fv)
  _positive(fv, "gpu-hours", "mfu", "flops-per-token", "price", "watts", "days", "params",
            "tokens", "unique-tokens", "inference-price", "inference-mfu", "tokens-per-param")
  flags.register_validator("pue", lambda v: v is None or v >= 1, message="must be >= 1 "
                           "(facility power over IT power; 1.1 is a modern cloud datacenter)",
                           flag_values=fv)
  flags.register_validator("carbon", lambda v: v is None or v >= 0,
                           message="must be >= 0 kg CO2e per kWh", flag_values=fv)


PLAN_USAGE = ("scaling plan --flops=C | --params=N --tokens=D | --gpu-hours=H | --days=D "
              "[--hardware=NAME --devices=K --mfu=0.4 --price=USD --watts=W --pue=P "
              "--carbon=KG] [--law=NAME|FIT.json] [--inference-tokens=T [--inference-price=USD]] "
              "[--unique-tokens=U] [--sweep=LO:HI [--plot=FILE.png]] [--json]")


def parse_plan_args(argv: list[str]) -> SimpleNamespace:
  """`scaling plan` flags as attributes (`args.gpu_hours`), plus `args.argv` and
  `args.present` (the flags given on the command line)."""
  parsed = parse(argv, _define_plan, prog="scaling plan", usage=PLAN_USAGE,
                 description="Compute-optimal model size, tokens and loss for a budget, and "
                 "what the run costs in time, money, energy and CO2.")
  ns = _namespace(parsed)
  ns.present = {name for name in parsed.fv if parsed.fv[name].present}
  return ns


def _peaks():
  from scaling import hardware
  return hardware.PEAKS


def _cost_kwargs(args) -> dict:
  return dict(hardware_name=args.hardware, devices=args.devices, price=args.price,
              watts=args.watts, pue=args.pue, carbon=args.carbon)


def _plan_sweep(args) -> int:
  """`--sweep=LO:HI[:POINTS] [--plot=FILE.png]`: the plan across budgets."""
  from scaling.fit import plan, plan_sweep

  for name in ("flops", "params", "tokens", "gpu-hours", "days", "unique-tokens",
               "inference-tokens", "inference-price", "experts", "granularity", "top-k",
               "config"):
    if name in args.present:
      raise ScalingError(f"--{name} does not combine with --sweep (which sets the budgets): "
                         "plan one budget at a time with --flops")
  budgets = plan_sweep.parse_sweep(args.sweep)
  src = plan.LawSource(args.law)
  result = plan_sweep.sweep(src, budgets, k=args.flops_per_token, mfu=args.mfu,
                            **_cost_kwargs(args))
  if args.plot:
    result["plot"] = plan_sweep.plot(result, args.plot)
  if args.json:
    print(json.dumps(result))
  else:
    print(plan_sweep.text(result))
    if args.plot:
      print(f"wrote {args.plot}")
  return 0


@command
def plan_main(argv: list[str]) -> int:
  """`scaling plan --flops=C | --params=N --tokens=D | --gpu-hours=H | --days=D [--hardware=...]
  [--law=NAME|FIT.json] [--sweep=LO:HI]`."""
  from scaling.fit import plan

  args = parse_plan_args(argv)
  if args.plot and not args.sweep:
    raise ScalingError("--plot needs --sweep=LO:HI (the figure is of the plan across budgets)")
  if args.sweep:
    return _plan_sweep(args)
  budget = plan.resolve_budget(
      flops=args.flops, gpu_hours=args.gpu_hours, days=args.days, params=args.params,
      tokens=args.tokens, hardware_name=args.hardware, mfu=args.mfu,
      mfu_given="mfu" in args.present, devices=args.devices, k=args.flops_per_token)
  moe = {"experts": args.experts, "granularity": args.granularity, "top_k": args.top_k,
         "tokens_per_param": args.tokens_per_param, "batch": args.serve_batch,
         "context": args.serve_context}
  out = plan.plan(args.law, budget["flops"], mfu=budget["mfu"],
                  mfu_source=budget["mfu_source"], inference_tokens=args.inference_tokens,
                  flops_per_param_token=args.flops_per_token,
                  inference_price=args.inference_price, inference_mfu=args.inference_mfu,
                  unique_tokens=args.unique_tokens, run=budget["run"], moe=moe,
                  **_cost_kwargs(args))
  if args.config:
    out["memory"] = plan.memory(args.config, args.mesh, batch=args.serve_batch,
                                context=args.serve_context)
  if args.critical_batch:  # the batch the data can use, and the steps that follow from it
    out["batch"] = critical_batch.plan_batch(args.critical_batch, out, seq_len=args.seq_len)
  if plan.LawSource(args.law).fit is not None:  # a fit.json: say where its law came from
    from scaling.fit import provenance
    out["provenance_summary"] = provenance.summary(provenance.load_fit_json(args.law))
  if args.json:
    print(json.dumps(out))
  else:
    print(_plan_text(out))
  return 0


def _plan_text(out: dict) -> str:
  """The human-readable `scaling plan` output."""
  iv = out.get("intervals", {})

  def line(name, key, unit):
    v = out.get(key)
    if v is None:
      return f"  {name:10s} —"
    ci = f"  [{iv[key][0]:.3g}, {iv[key][1]:.3g}]" if key in iv else ""
    return f"  {name:10s} {v:.4g} {unit}{ci}"

  lines = [f"law: {out['law']}  ({out['law_source']})"]
  if "provenance_summary" in out:
    lines.append(f"  {out['provenance_summary']}")
  lines.append(f"  budget     {out['flops']:.4g} FLOPs")
  if "run" in out:
    r = out["run"]
    loss = "" if r["loss"] is None else f", loss {r['loss']:.4g}"
    lines.append(f"  this run   N={r['params']:.4g}, D={r['tokens']:.4g} "
                 f"({r['tokens_per_param']:.1f} tokens/param{loss}); compute-optimal:")
  if "moe" in out:
    lines += _moe_text(out["moe"])
  else:
    lines += [line("N_opt", "params", "parameters"), line("D_opt", "tokens", "tokens"),
              line("loss", "loss", "nats/token")]
  if "device_hours" in out:
    lines += _cost_text(out)
  if "overtrain" in out:
    o = out["overtrain"]
    lines.append(f"  over-train N={o['params']:.4g}, D={o['tokens']:.4g} "
                 f"({o['tokens_per_param']:.0f} tokens/param) saves {o['saving']:.1%} of "
                 "training+inference FLOPs")
  if "inference" in out:
    lines += _inference_text(out["inference"])
  elif "inference_note" in out:
    lines.append(f"  inference  {out['inference_note']}")
  if "data_constrained" in out:
    lines += _data_text(out["data_constrained"])
  if "batch" in out:
    lines.append(critical_batch.batch_text(out["batch"]))
  if "memory" in out:
    mem = out["memory"]
    lines.append(f"  memory     {mem['memory_per_device_bytes'] / 2**30:.2f} GiB per device "
                 f"for {mem['config']} on mesh {mem['mesh']}")
    lines.append("  serving    " + _serving_text(mem["serving"]))
  return "\n".join(lines)


def _money(v) -> str:
  return "—" if v is None else f"${v:,.0f}" if v >= 100 else f"${v:.3g}"


def _cost_text(out: dict) -> list[str]:
  a = out["assumptions"]
  t = out["time"]
  price, watts = a["price_usd_per_device_hour"], a["watts_per_device"]
  lines = [f"  time       {out['device_hours']:.4g} {t['hardware']}-hours at MFU "
           f"{out['mfu']:.3g} ({out['mfu_source']}); {out['days']:.4g} days on "
           f"{t['devices']} devices"]
  if out["cost_usd"] is None:
    lines.append(f"  cost       — ({price['source']})")
  else:
    lines.append(f"  cost       {_money(out['cost_usd'])} at ${price['value']:g} per "
                 f"device-hour ({price['source']})")
  if out["energy_mwh"] is None:
    lines.append(f"  energy     — ({watts['source']})")
  else:
    lines.append(f"  energy     {out['energy_mwh']:.4g} MWh = device-hours x {watts['value']:g}"
                 f" W ({watts['source']}) x PUE {a['pue']['value']:g} ({a['pue']['source']})")
    c = a["carbon_kg_per_kwh"]
    lines.append(f"  CO2        {out['co2_t']:.4g} t at {c['value']:g} kg/kWh ({c['source']})")
  return lines


def _inference_text(inf: dict) -> list[str]:
  pr = inf["prices"]
  ch, co = inf["chinchilla"], inf["cost_optimal"]
  lines = [f"  inference  {inf['inference_tokens']:.4g} tokens served at "
           f"{_money(pr['usd_per_1m_tokens_at_n_opt'])} per 1M tokens for N_opt ({pr['how']});"
           f" {inf['source']}",
           f"  {'':12s}{'Chinchilla-optimal':>20s}{'cost-optimal':>16s}"]
  for name, key, fmt in (("N", "params", ".4g"), ("D", "tokens", ".4g"),
                         ("tokens/param", "tokens_per_param", ".1f"), ("loss", "loss", ".4g")):
    lines.append(f"  {name:12s}{format(ch[key], fmt):>20s}{format(co[key], fmt):>16s}")
  for name, key in (("training $", "train_usd"), ("inference $", "inference_usd"),
                    ("total $", "total_usd")):
    lines.append(f"  {name:12s}{_money(ch[key]):>20s}{_money(co[key]):>16s}")
  lines.append(f"  {'':12s}the cost-optimal model saves {inf['saving']:.1%} at the same loss")
  return lines


def _data_text(dc: dict) -> list[str]:
  ch, best = dc["chinchilla"], dc["best"]
  lines = [f"  data       {dc['unique_tokens']:.4g} unique tokens ({dc['source']})",
           f"    Chinchilla-optimal: {ch['epochs']:.3g} epochs, loss {ch['loss']:.4g} with "
           f"repeats ({ch['loss_fresh']:.4g} with fresh data)",
           f"    best under repeats: N={best['params']:.4g}, D={best['tokens']:.4g}, "
           f"{best['epochs']:.3g} epochs, loss {best['loss']:.4g}",
           f"    {'epochs':>6} {'N':>9} {'D':>9} {'D_eff/D':>8} {'loss':>7} {'penalty':>8}"]
  for r in dc["epochs"]:
    lines.append(f"    {r['epochs']:>6.0f} {r['params']:>9.3g} {r['tokens']:>9.3g} "
                 f"{r['value_of_data']:>8.1%} {r['loss']:>7.4g} {r['penalty']:>+8.4f}")
  if "given" in dc:
    g = dc["given"]
    lines.append(f"    this run: {g['epochs']:.3g} epochs, loss {g['loss']:.4g} "
                 f"(penalty {g['penalty']:+.4f})")
  return lines


def _moe_text(m: dict) -> list[str]:
  s = m["shape"]
  lines = [f"  MoE        {m['law']} law ({m['source']})",
           f"  shape      {s['num_layers']} layers, d_model {s['d_model']}, {m['experts']} "
           f"experts of width {m['expert_d_ff']} (granularity {m['granularity']}), top-"
           f"{m['top_k']}",
           f"  params     {m['params_total']:.4g} total, {m['params_active']:.4g} active "
           f"({m['params_active_non_embedding']:.4g} active non-embedding)",
           f"  FLOPs      {m['flops_per_token']:.4g} per training token ({m['flops_method']}, "
           f"seq {m['seq_len']}); D = {m['tokens']:.4g} tokens "
           f"({m['tokens_per_active_param']:.1f} per active param)",
           f"  loss       {m['loss']:.4g} nats/token",
           "  serving    " + _serving_text(m["serving"])]
  for e in m["at_edge"]:
    lines.append(f"  note       {e}")
  return lines


def _serving_text(s: dict) -> str:
  return (f"{s['total_bytes'] / 1e9:.4g} GB = bf16 weights {s['weights_bytes'] / 1e9:.4g} GB "
          f"(all {s['params_total']:.4g} params resident, {s['params_active']:.4g} active) + "
          f"KV cache {s['kv_cache_bytes'] / 1e9:.4g} GB (batch {s['batch']}, context "
          f"{s['context']})")


if __name__ == "__main__":
  sys.exit(fit_main(sys.argv[1:]))
