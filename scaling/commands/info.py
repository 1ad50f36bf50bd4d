"""`scaling info --config=... [--mesh=data:8,model:1,expert:1] [--json]`.

Counts parameters, training FLOPs per token and memory per device from abstract shapes only, so
a 175B config is inspected on a laptop; shows the parametrization (`sp` / `mup`) with each
parameter group's learning-rate and init multipliers (`scaling.models.parametrization`).
"""

from __future__ import annotations

import json
import math

from absl import flags

from scaling import accounting
from scaling.commands.common import command, parse
from scaling.config import validate
from scaling.parallel.mesh import mesh_shape, parse_mesh_flag


def _define(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("mesh", None, "Mesh to count memory for, e.g. data:8,model:1,expert:1; "
                      "default: the config's mesh on one device per axis.", flag_values=fv)
  flags.DEFINE_bool("json", False, "Print one JSON object.", flag_values=fv)


def _human(n: float) -> str:
  for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.3g}{unit}"
  return f"{n:.3g}"


def _parametrization(cfg) -> dict:
  """`parametrization.describe` with each group's parameter count, from abstract shapes."""
  from flax import nnx

  from scaling.models import parametrization
  from scaling.models.dense import abstract_model

  counts = parametrization.group_counts(nnx.state(abstract_model(cfg), nnx.Param))
  return parametrization.describe(cfg.model, counts)


def _parametrization_line(p: dict) -> str:
  groups = ", ".join(f"{g} x{v['lr_multiplier']:.4g} ({_human(v['params'])} params)"
                     for g, v in p["groups"].items())
  if p["name"] == "sp":
    return f"parametrization sp: learning-rate multipliers {groups}"
  init = p["groups"]["hidden"]["init_std_multiplier"]
  out = p["groups"]["readout"]["output_multiplier"]
  return (f"parametrization mup (base width {p['base_width']}, width x{p['width_mult']:.4g}): "
          f"learning-rate multipliers {groups}; hidden init std x{init:.4g}, readout and router "
          f"outputs x{out:.4g}, attention {p['attention_scale']}, query init {p['query_init']}")


USAGE = "scaling info --config=FILE[:PRESET] [--config.a.b=VALUE] [--mesh=data:8,model:1] [--json]"


@command
def main(argv: list[str]) -> int:
  fv = parse(argv, _define, prog="scaling info", usage=USAGE, config=True,
             description="Parameter, FLOP and memory counts for a config, from abstract shapes "
             "only (nothing is allocated).").fv
  cfg = validate(fv["config"].value)
  if fv["mesh"].value:
    sizes = parse_mesh_flag(fv["mesh"].value)
    shape = mesh_shape(sizes, math.prod(max(1, v) for v in sizes.values()))
  else:
    shape = {a: max(1, int(cfg.mesh[a])) for a in ("data", "model", "expert")}
  report = accounting.info(cfg, shape)
  report["parametrization"] = _parametrization(cfg)
  if fv["json"].value:
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0
  s = report["shape"]
  print(f"model {report['model']}: {s['num_layers']} layers, d_model {s['d_model']}, "
        f"{s['num_heads']} heads ({s['num_kv_heads']} kv) x {s['head_dim']}, d_ff {s['d_ff']} "
        f"({s['mlp']}), vocab {s['vocab_size']}, {s['position']} positions")
  print(f"params  non-embedding N {report['params_non_embedding']:,} "
        f"({_human(report['params_non_embedding'])}), total {report['params_total']:,} "
        f"({_human(report['params_total'])}), active {report['params_active']:,}")
  flops = ", ".join(f"{k} {_human(v)}" for k, v in report["flops_per_token"].items())
  print(f"training FLOPs per token at seq_len {report['seq_len']}: {flops}")
  print(_parametrization_line(report["parametrization"]))
  mem = report["memory_breakdown_bytes"]
  mesh = ",".join(f"{k}:{v}" for k, v in report["mesh"].items())
  print(f"memory per device on mesh {mesh}: {mem['total'] / 2**30:.2f} GiB (params "
        f"{mem['params'] / 2**30:.2f}, grads {mem['grads'] / 2**30:.2f}, optimizer "
        f"{mem['optimizer'] / 2**30:.2f}, activations ~{mem['activations'] / 2**30:.2f})")
  return 0

