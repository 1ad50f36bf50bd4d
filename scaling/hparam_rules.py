"""Hyperparameter size rules: a run's peak learning rate and batch from its size, in one place.

`scaling train` (`train.hparam_rule`, through `apply_to_train`) and every ladder rung
(`scaling.ladder.spec`, through `resolve`) call this module, so the same (N, D, C) gets the same
learning rate and batch whichever entry point it comes through.

Rules (`train.hparam_rule`, parsed by `parse`):

* `""` / `"none"`: no rule; `scaling train` keeps `train.lr` and `train.global_batch` (a ladder
  then applies DeepSeek's rule, as `ladder.rules.lr_rule` / `batch_rule` say).
* `"deepseek"`: DeepSeek-AI 2024 (DeepSeek LLM, Sec. 3.1, Eq. 1): eta_opt = 0.3118 C^-0.1250
  and B_opt = 0.2920 C^0.3271 tokens, C in FLOPs; fitted for AdamW on 1e17..2e19 FLOPs.
* `"fit:PATH[,PATH]"`: fitted laws, each a `fit.json` (or the `--out` folder holding it) of
  `scaling fit --law=lr` (lr*(N, D) = c N^a D^b, N non-embedding parameters, D tokens) or
  `--law=batch` (B*(C) = k C^e tokens); what no path fits falls back to DeepSeek's Eq. 1.

Bounds (`Bounds`; a ladder's `ladder.rules`, `scaling train` the defaults, equal to the ladder's):
lr = min(lr_max, rule x lr_scale) to 4 significant digits; the batch in sequences is
round(B / seq_len) to a multiple of batch_multiple x microbatches, at least min_batch and at
most max_batch (0: no cap). A sweep variant (`scaling.ladder.tuning`) multiplies the bounded
values afterwards (its lr is not capped, its batch is only rounded): the variant was asked for.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from scaling.errors import ScalingError

# DeepSeek-AI 2024, DeepSeek LLM, Sec. 3.1, Eq. 1.
DEEPSEEK_LR = (0.3118, -0.1250)  # eta_opt = 0.3118 C^-0.1250
DEEPSEEK_BATCH = (0.2920, 0.3271)  # B_opt = 0.2920 C^0.3271 tokens
FIELD = "train.hparam_rule"
LAWS = ("lr", "batch")  # the `scaling fit --law` values a `fit:` rule reads


def deepseek(flops: float) -> tuple[float, float]:
  """(peak learning rate, batch in tokens) for a budget of `flops` FLOPs (DeepSeek LLM Eq. 1)."""
  c = max(float(flops), 1.0)
  return DEEPSEEK_LR[0] * c ** DEEPSEEK_LR[1], DEEPSEEK_BATCH[0] * c ** DEEPSEEK_BATCH[1]


@dataclasses.dataclass(frozen=True)
class Bounds:
  """Limits applied to a rule's values (module doc); the defaults are the ladder's defaults."""

  lr_scale: float = 1.0
  lr_max: float = 0.02
  batch_multiple: int = 8
  min_batch: int = 8  # sequences
  max_batch: int = 0  # sequences; 0: no cap

  @classmethod
  def from_rules(cls, rules) -> Bounds:
    """From a ladder's `ladder.rules` block (missing keys keep their defaults)."""
    d = cls()
    return cls(float(rules.get("lr_scale", d.lr_scale)), float(rules.get("lr_max", d.lr_max)),
               int(rules.get("batch_multiple", d.batch_multiple)),
               int(rules.get("min_batch", d.min_batch)), int(rules.get("max_batch", d.max_batch)))


@dataclasses.dataclass(frozen=True)
class SizeRule:
  """Where the learning rate and the batch come from; None keeps the config's value.

  Attributes:
    lr: `(N, D, C) -> peak learning rate`.
    batch: `(C) -> batch in tokens`.
    source: the rule in words (for messages and reports).
  """

  lr: Callable[[float, float, float], float] | None
  batch: Callable[[float], float] | None
  source: str


def _deepseek_lr(n: float, d: float, c: float) -> float:
  return deepseek(c)[0]


def _deepseek_batch(c: float) -> float:
  return deepseek(c)[1]


DEEPSEEK = SizeRule(_deepseek_lr, _deepseek_batch, "DeepSeek LLM Eq. 1")


def _number(params: dict, key: str, path: str, law: str) -> float:
  v = params.get(key)
  if not isinstance(v, (int, float)) or not math.isfinite(v):
    raise ScalingError(f"{FIELD}=fit:{path}: the {law} fit has no finite parameter {key!r}; "
                       f"refit it with `scaling fit DIR --law={law} --out=DIR`")
  return float(v)


def load_law(path: str) -> tuple[str, Callable]:
  """A fitted hyperparameter law from a `scaling fit --law=lr|batch` fit.json.

  Returns:
    ("lr", (N, D, C) -> lr) or ("batch", C -> tokens).

  Raises:
    ScalingError: the file is missing or not JSON, or holds another law.
  """
  from scaling import storage

  obj = None
  try:
    where = storage.Path(path)
    obj = storage.read_json(where / "fit.json" if where.is_dir() else where)
  except (OSError, ValueError, UnicodeDecodeError):
    pass
  if not isinstance(obj, dict):
    raise ScalingError(f"{FIELD}=fit:{path}: no such fit.json (missing or not JSON); write one "
                       "with `scaling fit DIR --law=lr --out=DIR` and pass DIR/fit.json")
  law = obj.get("law")
  if law not in LAWS:
    raise ScalingError(f"{FIELD}=fit:{path} is a {law!r} fit; a size rule needs a fit of "
                       "`scaling fit --law=lr` (learning rate) or `--law=batch`")
  p = obj.get("params") or {}
  if law == "lr":
    c, a, b = (_number(p, k, path, law) for k in ("c", "a", "b"))
    return law, lambda n, d, _c: c * n ** a * d ** b
  k, e = (_number(p, key, path, law) for key in ("k", "e"))
  return law, lambda flops: k * flops ** e


def parse(spec: str | None) -> SizeRule | None:
  """`train.hparam_rule` as a `SizeRule` (None for no rule); reads the `fit:` files.

  Raises:
    ScalingError: an unknown rule, a missing or unreadable fit.json, a fit of another law, or
      two fits of the same law; one line naming `train.hparam_rule`.
  """
  spec = (spec or "").strip()
  if spec in ("", "none"):
    return None
  if spec == "deepseek":
    return DEEPSEEK
  if not spec.startswith("fit:"):
    raise ScalingError(f"{FIELD}={spec!r} is unknown; choose '' (none), 'deepseek' or "
                       "'fit:PATH' (a fit.json of `scaling fit --law=lr` or --law=batch)")
  paths = [p.strip() for p in spec[len("fit:"):].split(",") if p.strip()]
  if not paths or len(paths) > 2:
    raise ScalingError(f"{FIELD}={spec!r}: give one or two fit.json paths, 'fit:LR.json' or "
                       "'fit:LR.json,BATCH.json'")
  laws: dict[str, Callable] = {}
  for path in paths:
    law, fn = load_law(path)
    if law in laws:
      raise ScalingError(f"{FIELD}={spec!r} names two {law} fits; give one --law=lr and/or one "
                         "--law=batch fit.json")
    laws[law] = fn
  lr, batch = laws.get("lr", _deepseek_lr), laws.get("batch", _deepseek_batch)
  words = " and ".join(f"fitted {k} law ({p})" for k, p in zip(laws, paths, strict=True))
  fallback = [k for k in LAWS if k not in laws]
  if fallback:
    words += f"; {fallback[0]} from DeepSeek LLM Eq. 1"
  return SizeRule(lr, batch, words)


def ladder_rule(rules, hparam_rule: str | None) -> SizeRule:
  """The rule a ladder applies to its rungs: `run.train.hparam_rule` when set, else DeepSeek's;
  `ladder.rules.lr_rule` / `batch_rule` = "fixed" keep the run block's value instead.

  Raises:
    ScalingError: an lr_rule / batch_rule other than 'deepseek' or 'fixed', or a bad rule.
  """
  for key in ("lr_rule", "batch_rule"):
    if rules.get(key) not in ("deepseek", "fixed"):
      raise ScalingError(f"ladder.rules.{key}={rules.get(key)!r}; choose 'deepseek' (the size "
                         "rule: DeepSeek's Eq. 1, or run.train.hparam_rule when set) or 'fixed'")
  rule = parse(hparam_rule) or DEEPSEEK
  return SizeRule(rule.lr if rules.lr_rule != "fixed" else None,
                  rule.batch if rules.batch_rule != "fixed" else None, rule.source)


def sig(x: float, digits: int = 4) -> float:
  """Rounds to `digits` significant digits, so configs (and run ids) stay readable and stable."""
  return float(f"{x:.{digits}g}")


def resolve(rule: SizeRule, *, params: float, tokens: float, flops: float, seq_len: int,
            lr: float, global_batch: int, microbatches: int = 1, bounds: Bounds = Bounds(),
            lr_mult: float = 1.0, batch_mult: float = 1.0) -> tuple[float, int]:
  """The learning rate and batch (sequences) of a run of N = `params` non-embedding parameters,
  D = `tokens` and C = `flops`: the rule's, bounded, where `rule` gives one, else the
  config's `lr` / `global_batch`; then times a sweep variant's `lr_mult` / `batch_mult`
  (module doc).
  """
  mult = max(1, int(bounds.batch_multiple)) * max(1, int(microbatches))
  if rule.lr is not None:
    lr = sig(min(bounds.lr_max, rule.lr(params, tokens, flops) * bounds.lr_scale))
  if rule.batch is not None:
    global_batch = max(1, int(round(rule.batch(flops) / seq_len / mult))) * mult
    global_batch = max(global_batch, int(math.ceil(bounds.min_batch / mult)) * mult)
    if bounds.max_batch:
      global_batch = min(global_batch, max(mult, int(bounds.max_batch) // mult * mult))
  if lr_mult != 1:
    lr = sig(lr * lr_mult)
  if batch_mult != 1:
    global_batch = max(mult, int(round(global_batch * batch_mult / mult)) * mult)
  return float(lr), int(global_batch)


def apply_to_train(cfg, counts: dict) -> None:
  """`scaling train` with `train.hparam_rule`: fills `train.lr` and `train.global_batch` from
  the rule at the run's N, D and C, keeping its tokens D = steps x global_batch x seq_len as
  configured (steps = round(D / (global_batch x seq_len)), warm-up scaled with the steps),
  with the ladder's default `Bounds`, so a ladder rung of the same C trains with the same
  learning rate and batch.

  Args:
    cfg: the run config (modified in place).
    counts: `scaling.train.loop.run_counts(cfg)`: `params_non_embedding`, `tokens`,
      `flops_per_token`.
  """
  t = cfg.train
  rule = parse(t.hparam_rule)
  if rule is None:
    return
  tokens = float(counts["tokens"])
  lr, batch = resolve(rule, params=float(counts["params_non_embedding"]), tokens=tokens,
                      flops=tokens * float(counts["flops_per_token"]), seq_len=int(t.seq_len),
                      lr=float(t.lr), global_batch=int(t.global_batch),
                      microbatches=int(t.microbatches))
  t.lr, t.global_batch = lr, batch
  steps = int(round(tokens / (batch * t.seq_len)))
  if steps < 1:
    raise ScalingError(f"{FIELD}={t.hparam_rule!r}: the rule's batch of {batch} x {t.seq_len} "
                       f"tokens is more than the run's {tokens:.0f} tokens; raise train.steps")
  t.warmup_steps = min(steps - 1, int(round(t.warmup_steps * steps / max(1, t.steps))))
  t.steps = steps
