"""`scaling import HF_DIR --workdir=W [--config=FILE[:ARG]] [--notrain [--eval]] [--json]`.

Starts (or resumes) a run in W from a Hugging Face checkpoint folder: the model's architecture
comes from HF_DIR/config.json, everything else (training, data, mesh, compute dtype) from
--config (default: `scaling.config.default_config()`), and the weights from its safetensors,
placed by the run's sharding rules. `--notrain` only writes W's config, without training: W's
step 0 is the imported weights, read from HF_DIR by `scaling score` and `scaling export` (and by
a later `scaling import` that trains); `--eval` then reports their held-out loss on the
config's data.
"""

from __future__ import annotations

import json

from absl import flags

from scaling.commands.common import command, parse

USAGE = ("scaling import HF_DIR --workdir=DIR [--config=FILE[:PRESET]] [--config.a.b=VALUE] "
         "[--notrain [--eval]] [--json]")


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "Run folder (created; resumed when it has checkpoints).",
                      flag_values=fv)
  flags.DEFINE_bool("notrain", False, "Only write the run folder (its step 0 is the imported "
                    "weights, read from HF_DIR), without training.", flag_values=fv)
  flags.DEFINE_bool("eval", False, "With --notrain: print the imported weights' held-out loss "
                    "on the config's data.", flag_values=fv)
  flags.DEFINE_bool("json", False, "Print the result as JSON.", flag_values=fv)


def _has_config(argv: list[str]) -> bool:
  return any(a in ("--config", "-config") or a.startswith(("--config=", "-config=", "--config.",
                                                           "--noconfig."))
             for a in argv)


@command
def main(argv: list[str]) -> int:
  parsed = parse(argv, _define, prog="scaling import", usage=USAGE, nargs=(1, 1),
                 config=_has_config(argv),
                 description="Start or resume a run from a Hugging Face checkpoint (Llama, "
                 "Mistral, Qwen3, Mixtral, Qwen2-MoE, Qwen3-MoE): the architecture from its "
                 "config.json, the rest from --config (optional; any field can be overridden "
                 "with --config.a.b=VALUE); the run record names the source (init_from).")
  fv = parsed.fv
  from scaling.errors import ScalingError

  workdir = fv["workdir"].value
  if not workdir:
    raise ScalingError("scaling import: --workdir is required, e.g. --workdir=/tmp/run1")
  overridden = [a.split("=", 1)[0].lstrip("-").removeprefix("no").removeprefix("config.model.")
                for a in argv if a.lstrip("-").removeprefix("no").startswith("config.model.")]
  from scaling.hf.load import import_config, prepare

  base = fv["config"].value if "config" in fv else None
  cfg = import_config(parsed.args[0], base, overridden=overridden)
  if fv["notrain"].value:
    r = prepare(cfg, workdir, evaluate=fv["eval"].value)
    if fv["json"].value:
      print(json.dumps(r, indent=2, sort_keys=True))
    else:
      loss = "" if r["eval_loss"] is None else f", held-out loss {r['eval_loss']:.6f}"
      print(f"imported {r['init_from'][3:]} into {r['workdir']} (step {r['step']}{loss})")
    return 0
  import logging

  from scaling.train.loop import train

  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                      force=True)
  result = train(cfg, workdir)
  if fv["json"].value:
    print(json.dumps(result, indent=2, sort_keys=True, default=str))
  else:
    print(f"{result['status']}: {result['run_id']} from {result.get('init_from')} "
          f"final eval loss {result['final_eval_loss']} in {result['wall_time_s']:.1f}s")
  return 0 if result["status"] == "complete" else 1
