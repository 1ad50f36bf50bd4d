"""The run config: every field with its default, and validation with one clear error per mistake.

Config files in `configs/` start from `default_config()` and override what their preset needs.
`validate(cfg)` runs before anything is built or compiled; each failure raises `ScalingError`
naming the field and the fix.
"""

from __future__ import annotations

import ml_collections

from scaling import hparam_rules
from scaling.errors import require

MESH_AXES = ("data", "model", "expert")
LOGICAL_AXES = ("batch", "length", "embed", "heads", "kv_heads", "kv", "mlp", "vocab", "layers",
                "expert")
DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "full", "dots_saveable")
MLP_TYPES = ("swiglu", "gelu")
POSITIONS = ("rope", "learned", "relative")
PARAMETRIZATIONS = ("sp", "mup")  # `scaling.models.parametrization`

# Logical axis -> mesh axes ("" = replicated; "data,expert" = sharded over both).
# Tensor parallelism over `model` (Megatron column/row split), batch over every data-parallel
# axis. Set `embed` to "data" for FSDP (ZeRO-3): parameters and optimizer state split over data.
DEFAULT_RULES = {
    "batch": "data,expert",
    "length": "",
    "embed": "",
    "heads": "model",
    "kv_heads": "model",  # GQA key/value heads; `kv` is the per-head (head_dim) axis
    "kv": "",
    "mlp": "model",
    "vocab": "model",
    "layers": "",
    "expert": "expert",
}


def default_config() -> ml_collections.ConfigDict:
  """All fields a run understands, with defaults for a tiny CPU-sized dense model."""
  c = ml_collections.ConfigDict()

  c.model = m = ml_collections.ConfigDict()
  m.name = "tiny"
  m.num_layers = 2
  m.d_model = 64
  m.num_heads = 4
  m.num_kv_heads = 4
  m.head_dim = 0  # 0: d_model // num_heads
  m.d_ff = 256
  m.vocab_size = 512
  m.max_len = 128
  m.mlp = "swiglu"
  m.position = "rope"
  m.rope_base = 10_000.0
  m.qk_norm = False
  m.tied_embeddings = True
  m.logit_softcap = 0.0  # 0: no cap
  m.norm_eps = 1e-6
  m.init_std = 0.02
  m.dtype = "bfloat16"
  m.param_dtype = "float32"
  m.remat = "none"
  m.scan_layers = True  # False unrolls the layer loop (same parameters, longer compile)
  m.attention_impl = "auto"  # "auto" | "xla" | "cudnn"
  m.parametrization = "sp"  # "sp" | "mup" (Yang et al. 2022; scaling/models/parametrization.py)
  m.mup_base_width = 256  # mup: the d_model whose multipliers are 1 (where hparams were tuned)

  m.moe = moe = ml_collections.ConfigDict()
  moe.num_experts = 0  # 0: dense model
  moe.top_k = 2
  moe.expert_d_ff = 0  # 0: model.d_ff
  moe.num_shared_experts = 0
  moe.capacity_factor = 1.25
  moe.eval_capacity_factor = 2.0
  moe.dropless = False
  moe.every = 1  # every k-th layer is MoE (the last of each group of k)
  moe.dispatch = "sort"  # "einsum" (GShard reference) | "sort" (ragged_dot) | "pallas" (kernels)
  moe.gating = "softmax_topk"  # | "topk_softmax" (Mixtral)
  moe.renormalize = True  # softmax_topk: renormalise the kept weights to sum 1
  moe.router_jitter = 0.0
  moe.load_balance_coef = 0.01  # Switch Transformer default (Fedus et al. 2022, Sec. 2.2)
  moe.router_z_loss_coef = 1e-3  # ST-MoE default (Zoph et al. 2022, Sec. 3.1)

  c.train = t = ml_collections.ConfigDict()
  t.steps = 200
  t.global_batch = 16
  t.seq_len = 128
  t.microbatches = 1
  t.optimizer = "adamw"
  t.lr = 3e-3
  t.min_lr_ratio = 0.1
  t.warmup_steps = 20
  t.schedule = "cosine"
  t.decay_fraction = 0.2  # wsd: final fraction of steps spent decaying
  t.decay_shape = "linear"  # wsd: "linear" (MiniCPM) | "1-sqrt" (Hagele et al. 2024)
  t.weight_decay = 0.1
  t.b1 = 0.9
  t.b2 = 0.95
  t.eps = 1e-8
  t.grad_clip = 1.0
  t.z_loss = 0.0
  t.seed = 0
  t.log_every = 10
  t.eval_every = 100
  t.eval_batches = 4
  t.checkpoint_every = 100
  t.keep_checkpoints = 2
  t.flops_method = "chinchilla"
  # lr and batch from size (`scaling.hparam_rules`): "deepseek" (DeepSeek LLM Eq. 1, from C) or
  # "fit:LR.json[,BATCH.json]" (laws fitted by `scaling fit --law=lr|batch`); "" keeps them.
  t.hparam_rule = ""
  t.hardware = ""  # "" = detect

  from scaling.data.pipeline import default_config as data_defaults  # owns the data knobs

  c.data = data_defaults()

  c.mesh = ms = ml_collections.ConfigDict()
  ms.data = -1
  ms.model = 1
  ms.expert = 1
  ms.rules = ml_collections.ConfigDict(dict(DEFAULT_RULES))
  return c


def head_dim(m: ml_collections.ConfigDict) -> int:
  """Per-head width; `model.head_dim` when set, else d_model // num_heads."""
  return int(m.head_dim) or int(m.d_model) // int(m.num_heads)


def expert_d_ff(m: ml_collections.ConfigDict) -> int:
  """Width of one routed expert; `model.moe.expert_d_ff` when set, else model.d_ff."""
  return int(m.moe.expert_d_ff) or int(m.d_ff)


def validate_model(m: ml_collections.ConfigDict) -> None:
  """Checks `cfg.model`; raises ScalingError naming the first bad field."""
  for name in ("num_layers", "d_model", "num_heads", "num_kv_heads", "d_ff", "vocab_size",
               "max_len"):
    value = m.get(name)
    require(isinstance(value, int) and value > 0,
            f"model.{name}={value!r} must be a positive integer")
  require(m.head_dim >= 0, f"model.head_dim={m.head_dim} must be >= 0 (0 means d_model/heads)")
  require(m.head_dim or m.d_model % m.num_heads == 0,
          f"model.num_heads={m.num_heads} does not divide model.d_model={m.d_model}; "
          f"choose heads dividing {m.d_model} or set model.head_dim explicitly")
  require(m.num_heads % m.num_kv_heads == 0,
          f"model.num_kv_heads={m.num_kv_heads} does not divide model.num_heads={m.num_heads}; "
          "grouped-query attention needs heads to be a multiple of kv heads")
  require(m.mlp in MLP_TYPES, f"model.mlp={m.mlp!r} is unknown; choose one of {MLP_TYPES}")
  require(m.position in POSITIONS,
          f"model.position={m.position!r} is unknown; choose one of {POSITIONS}")
  require(m.position != "rope" or head_dim(m) % 2 == 0,
          f"rotary embeddings need an even head dimension, got {head_dim(m)}; "
          "change model.head_dim or model.num_heads")
  for name in ("dtype", "param_dtype"):
    require(m.get(name) in DTYPES, f"model.{name}={m.get(name)!r} is unknown; choose {DTYPES}")
  require(m.remat in REMAT_POLICIES,
          f"model.remat={m.remat!r} is unknown; choose one of {REMAT_POLICIES}")
  require(m.attention_impl in ("auto", "xla", "cudnn"),
          f"model.attention_impl={m.attention_impl!r}; choose 'auto', 'xla' or 'cudnn'")
  require(m.logit_softcap >= 0, f"model.logit_softcap={m.logit_softcap} must be >= 0")
  require(m.get("parametrization", "sp") in PARAMETRIZATIONS,
          f"model.parametrization={m.get('parametrization')!r} is unknown; choose 'sp' "
          "(standard) or 'mup' (maximal update, Yang et al. 2022)")
  require(isinstance(m.get("mup_base_width", 1), int) and m.get("mup_base_width", 1) > 0,
          f"model.mup_base_width={m.get('mup_base_width')!r} must be a positive integer (the "
          "d_model the hyperparameters were tuned at)")
  moe = m.moe
  if moe.num_experts:
    require(moe.num_experts > 0, f"model.moe.num_experts={moe.num_experts} must be >= 0")
    require(1 <= moe.top_k <= moe.num_experts,
            f"model.moe.top_k={moe.top_k} must be in [1, model.moe.num_experts="
            f"{moe.num_experts}]")
    require(moe.every >= 1 and m.num_layers % moe.every == 0,
            f"model.moe.every={moe.every} must divide model.num_layers={m.num_layers}")
    require(moe.expert_d_ff >= 0, f"model.moe.expert_d_ff={moe.expert_d_ff} must be >= 0")
    require(moe.dispatch in ("einsum", "sort", "pallas"),
            f"model.moe.dispatch={moe.dispatch!r}; choose 'einsum', 'sort' or 'pallas'")
    require(moe.gating in ("softmax_topk", "topk_softmax"),
            f"model.moe.gating={moe.gating!r}; choose 'softmax_topk' or 'topk_softmax'")
    require(moe.dropless or moe.capacity_factor > 0,
            f"model.moe.capacity_factor={moe.capacity_factor} must be > 0 unless dropless")


def validate_rules(rules: ml_collections.ConfigDict) -> None:
  """Checks the logical-axis rules table `cfg.mesh.rules`."""
  for logical, target in rules.items():
    require(logical in LOGICAL_AXES,
            f"mesh.rules.{logical}: unknown logical axis; the axes are {', '.join(LOGICAL_AXES)}")
    for axis in parse_axes(target):
      require(axis in MESH_AXES,
              f"mesh.rules.{logical}={target!r}: unknown mesh axis {axis!r}; "
              f"use a comma-separated subset of {MESH_AXES} or '' to replicate")


def parse_axes(target: str | None) -> tuple[str, ...]:
  """'data,expert' -> ('data', 'expert'); '' or None -> ()."""
  if not target:
    return ()
  return tuple(a.strip() for a in str(target).split(",") if a.strip())


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Validates a whole run config before anything compiles; returns it unchanged."""
  for section in ("model", "train", "data", "mesh"):
    require(section in cfg, f"config has no '{section}' section; start from "
            "scaling.config.default_config()")
  validate_model(cfg.model)
  validate_rules(cfg.mesh.rules)
  t = cfg.train
  for name in ("steps", "global_batch", "seq_len", "microbatches", "eval_batches", "log_every"):
    require(isinstance(t.get(name), int) and t.get(name) > 0,
            f"train.{name}={t.get(name)!r} must be a positive integer")
  require(t.seq_len <= cfg.model.max_len,
          f"train.seq_len={t.seq_len} is longer than model.max_len={cfg.model.max_len}; "
          "raise model.max_len or shorten train.seq_len")
  require(t.global_batch % t.microbatches == 0,
          f"train.global_batch={t.global_batch} is not divisible by "
          f"train.microbatches={t.microbatches}")
  require(t.optimizer in ("adamw", "adafactor", "lion"),
          f"train.optimizer={t.optimizer!r} is unknown; choose adamw, adafactor or lion")
  require(cfg.model.get("parametrization", "sp") != "mup" or t.optimizer != "adafactor",
          "train.optimizer='adafactor' with model.parametrization='mup': the muP learning-rate "
          "rules (Yang et al. 2022, Table 3) are for Adam-type optimizers; use adamw or lion")
  require(t.schedule in ("cosine", "wsd", "constant"),
          f"train.schedule={t.schedule!r} is unknown; choose cosine, wsd or constant")
  require(t.get("decay_shape", "linear") in ("linear", "1-sqrt"),
          f"train.decay_shape={t.get('decay_shape')!r} is unknown; choose 'linear' or '1-sqrt'")
  require(t.schedule != "wsd" or 0 < t.decay_fraction <= 1,
          f"train.decay_fraction={t.decay_fraction} must be in (0, 1] (the final fraction of "
          "the run spent decaying; default 0.2)")
  require(0 <= t.warmup_steps < t.steps or t.steps == 1,
          f"train.warmup_steps={t.warmup_steps} must be in [0, train.steps={t.steps})")
  require(t.lr > 0, f"train.lr={t.lr} must be positive")
  hparam_rules.parse(t.get("hparam_rule", ""))  # reads a `fit:` rule's files, naming the field
  require(t.flops_method in ("6N", "kaplan", "chinchilla"),
          f"train.flops_method={t.flops_method!r}; choose 6N, kaplan or chinchilla")
  for axis in MESH_AXES:
    size = cfg.mesh.get(axis)
    require(isinstance(size, int) and (size > 0 or size == -1),
            f"mesh.{axis}={size!r} must be a positive integer or -1 (take the rest)")
  require(sum(cfg.mesh.get(a) == -1 for a in MESH_AXES) <= 1,
          "at most one of mesh.data, mesh.model, mesh.expert may be -1")
  return cfg


def load(spec: str) -> ml_collections.ConfigDict:
  """`configs/dense.py:tiny` -> that file's `get_config("tiny")`, as `--config=` would load it.

  For notebooks and scripts; relative paths are taken from the current directory. The one
  loader of the CLI (`scaling.config_file.load_config`): a file that fails to load is a
  `ScalingError` reading `FILE:LINE: message`.
  """
  from scaling.config_file import load_config

  return load_config(spec)
