"""`scaling export RUN_DIR --out=DIR [--step=S] [--mesh=...] [--dropless]`.

Writes the run's checkpoint as a Hugging Face folder (`config.json`, `model.safetensors`, the
tokenizer when the run's data has one) that `transformers.AutoModelForCausalLM` loads as is.
"""

from __future__ import annotations

from absl import flags

from scaling.commands.common import command, parse

USAGE = "scaling export RUN_DIR --out=DIR [--step=S] [--mesh=data:1] [--dropless]"


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("out", None, "Folder to write (new, or empty).", flag_values=fv)
  flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the newest).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_string("mesh", None, "Devices to restore onto, e.g. data:1 (default: the run's "
                      "mesh on this machine's devices).", flag_values=fv)
  flags.DEFINE_bool("dropless", False, "Export a capacity-limited MoE run as the dropless "
                    "function the HF MoE classes compute.", flag_values=fv)
  flags.DEFINE_float("max_shard_gb", 5.0, "Largest safetensors file, in GB (10^9 bytes).",
                     lower_bound=1e-9, flag_values=fv)


@command
def main(argv: list[str]) -> int:
  parsed = parse(argv, _define, prog="scaling export", usage=USAGE, nargs=(1, 1),
                 description="Write a run's checkpoint as a Hugging Face folder: LlamaForCausalLM "
                 "(Qwen3 with QK-norm), MixtralForCausalLM, or Qwen2-MoE / Qwen3-MoE; refuses "
                 "a model whose HF class would compute another function.")
  fv = parsed.fv
  from scaling.errors import ScalingError

  if not fv["out"].value:
    raise ScalingError("scaling export: --out is required, e.g. --out=/tmp/hf_model")
  from scaling.hf.export import export_run

  r = export_run(parsed.args[0], fv["out"].value, step=fv["step"].value,
                 mesh_flag=fv["mesh"].value, dropless=fv["dropless"].value,
                 max_shard_bytes=int(fv["max_shard_gb"].value * 1e9))
  print(f"exported step {r['step']} as {r['architecture']}: {r['tensors']} tensors, "
        f"{r['bytes']:,} bytes in {len(r['files'])} file(s)"
        f"{' + tokenizer' if r['tokenizer'] else ''} -> {r['out']}")
  return 0
