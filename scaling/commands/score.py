"""`scaling score RUN_DIR --tokens=FILE.npy --out=FILE.npy [--logits=FILE.npy] [--step=S]`.

Writes the per-position negative log-likelihood (float32 [T-1], nats) of a token-id sequence
[T] under the run's model: entry t is -log p(tokens[t+1] | tokens[:t+1]); `--logits` also
writes the next-token logits.
"""

from __future__ import annotations

import os

from absl import flags

from scaling.commands.common import command, parse

USAGE = ("scaling score RUN_DIR --tokens=FILE.npy --out=FILE.npy [--logits=FILE.npy] [--step=S] "
         "[--mesh=data:1]")


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("tokens", None, "A .npy file of integer token ids, shape [T].",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "The .npy file to write (float32 [T-1], nats); must not "
                      "exist.", flag_values=fv)
  flags.DEFINE_string("logits", None, "Also write the next-token logits (float32 [T-1, V]) to "
                      "this .npy file; must not exist.", flag_values=fv)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_string("mesh", None, "Devices to run on, e.g. data:1 (default: the run's mesh "
                      "on this machine's devices).", flag_values=fv)


@command
def main(argv: list[str]) -> int:
  parsed = parse(argv, _define, prog="scaling score", usage=USAGE, nargs=(1, 1),
                 description="Per-position NLL (nats) of a token sequence under a run's model, "
                 "in evaluation mode.")
  fv = parsed.fv
  import numpy as np

  from scaling.errors import ScalingError

  tokens_path, out = fv["tokens"].value, fv["out"].value
  if not tokens_path or not out:
    raise ScalingError("scaling score: --tokens=FILE.npy and --out=FILE.npy are required")
  logits_path = fv["logits"].value
  for flag, path in (("out", out), ("logits", logits_path)):
    if path and os.path.exists(path):
      raise ScalingError(f"--{flag}={path} exists; choose a new file (scores never overwrite "
                         "one)")
  try:
    tokens = np.load(tokens_path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ScalingError(f"--tokens={tokens_path} cannot be read as a .npy array ({e})") from None
  from scaling.hf.runs import score, write_npy

  r = score(parsed.args[0], tokens, step=fv["step"].value, mesh_flag=fv["mesh"].value,
            where=f"--tokens={tokens_path}", return_logits=bool(logits_path))
  write_npy(out, r["nll"])
  if logits_path:
    write_npy(logits_path, r["logits"])
  print(f"scored {r['nll'].size} positions at step {r['step']}: mean NLL "
        f"{float(r['nll'].mean()):.4f} nats -> {out}")
  return 0
