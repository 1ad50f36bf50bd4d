"""Published scaling laws as named objects, usable by `scaling plan --law=NAME` and in plots.

Units: N = parameters, D = tokens, C = FLOPs, loss in nats/token on each paper's own data and
tokenizer (losses are not comparable across papers; exponents and N_opt roughly are).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import laws as laws_lib


@dataclasses.dataclass(frozen=True)
class PublishedLaw:
  """A published law.

  Attributes:
    name: registry key (`--law=NAME`).
    kind: `chinchilla` (E, A, B, alpha, beta), `frontier` (N_opt = k_N C^a, D_opt = k_D C^b),
      `ratio` (D = r N), `kaplan_nd`, `compute` (L(C) = E + (C/C_c)^-alpha), `krajewski`.
    params: the published numbers.
    source: paper, table/equation.
    note: caveats.
  """
  name: str
  kind: str
  params: dict
  source: str
  note: str = ""

  def optimal(self, flops, flops_per_param_token: float = 6.0) -> dict:
    """N_opt (`params`), D_opt (`tokens`) and, when the law has one, `loss` at `flops` FLOPs."""
    c = np.asarray(flops, np.float64)
    p = self.params
    if self.kind == "chinchilla":
      o = laws_lib.chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"], c,
                                      flops_per_param_token)
      return {"params": o["params"], "tokens": o["tokens"], "loss": o["loss"]}
    if self.kind == "ratio":
      # C = k N D and D = r N give N = sqrt(C / (k r)).
      n = np.sqrt(c / (flops_per_param_token * p["tokens_per_param"]))
      out = {"params": n, "tokens": p["tokens_per_param"] * n, "loss": None}
      if "loss_E" in p:  # a compute-only loss law fitted on the same ratio (Cerebras-GPT)
        out["loss"] = p["loss_E"] + (c / p["loss_C_c"]) ** (-p["loss_alpha"])
      return out
    if self.kind == "frontier":
      n = p["k_N"] * c ** p["a"]
      return {"params": n, "tokens": c / (flops_per_param_token * n), "loss": None}
    raise ScalingError(f"law {self.name!r} ({self.kind}) does not define a compute-optimal "
                       "allocation; use chinchilla, besiroglu2024, ratio20, ...")

  def loss(self, params, tokens):
    """Predicted loss at N parameters and D tokens (laws with a loss surface)."""
    p = self.params
    n, d = np.asarray(params, np.float64), np.asarray(tokens, np.float64)
    if self.kind == "chinchilla":
      return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]
    if self.kind == "kaplan_nd":
      # Kaplan et al. 2020, Eq. 1.5.
      return ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / d) ** p["alpha_D"]
    raise ScalingError(f"law {self.name!r} has no L(N, D) surface")


_PUBLISHED: dict[str, PublishedLaw] = {
    "hoffmann2022": PublishedLaw(
        "hoffmann2022", "chinchilla",
        {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
        "Hoffmann et al. 2022, 'Training compute-optimal large language models', "
        "Approach 3 fit (Sec. 3.3, App. D.2)",
        "rounded published values; MassiveText, nats/token"),
    "besiroglu2024": PublishedLaw(
        "besiroglu2024", "chinchilla",
        {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
        "Besiroglu et al. 2024, 'Chinchilla scaling: a replication attempt' "
        "(arXiv:2404.10102), refit of Hoffmann's Fig. 4 data, 240 points"),
    "hoffmann2022_approach1": PublishedLaw(
        "hoffmann2022_approach1", "frontier", {"a": 0.50, "b": 0.50},
        "Hoffmann et al. 2022, Table 2 (Approach 1: a = 0.50, b = 0.50)",
        "exponents only; the prefactor is set so that 1e21 FLOPs gives the Approach 3 optimum"),
    "hoffmann2022_approach2": PublishedLaw(
        "hoffmann2022_approach2", "frontier", {"a": 0.49, "b": 0.51},
        "Hoffmann et al. 2022, Table 2 (Approach 2: a = 0.49, b = 0.51)",
        "exponents only; prefactor anchored as for approach 1"),
    "kaplan2020": PublishedLaw(
        "kaplan2020", "kaplan_nd",
        {"N_c": 6.4e13, "D_c": 1.8e13, "alpha_N": 0.076, "alpha_D": 0.103},
        "Kaplan et al. 2020, 'Scaling laws for neural language models', Eq. 1.5 and Table 2",
        "WebText2, non-embedding N; not comparable in absolute loss"),
    "kaplan2020_frontier": PublishedLaw(
        "kaplan2020_frontier", "frontier", {"a": 0.73, "b": 0.27},
        "Kaplan et al. 2020, Sec. 1.2 and Sec. 6.1: N_opt ∝ C_min^0.73 (so D ∝ C^0.27)",
        "exponents only; prefactor anchored at 1e21 FLOPs like the Hoffmann frontiers"),
    "ratio20": PublishedLaw(
        "ratio20", "ratio", {"tokens_per_param": 20.0},
        "the textbook rule D = 20 N, from Hoffmann et al. 2022 (Table 3: ~20 tokens per "
        "parameter at compute-optimality)"),
    "cerebras2023": PublishedLaw(
        "cerebras2023", "ratio",
        {"tokens_per_param": 20.0, "loss_E": 0.5066, "loss_C_c": 5.984e22, "loss_alpha": 0.0737},
        "Dey et al. 2023, 'Cerebras-GPT', Sec. 3.1: L(f) = (f / 5.984e22)^-0.0737 + 0.5066, "
        "fitted on 111M-6.7B models trained at 20 tokens/parameter",
        "Pile test loss; C is Cerebras' reported FLOPs"),
}


def _anchored(laws: dict[str, PublishedLaw]) -> dict[str, PublishedLaw]:
  """The laws with every exponents-only frontier given its prefactor k_N (new objects; the
  dataclasses are frozen and nothing is changed in place)."""
  # The frontier laws publish exponents only. Anchor each so that at C = 1e21 FLOPs it gives the
  # Hoffmann Approach 3 optimum; then overlays compare slopes, which is what was published.
  ref = laws["hoffmann2022"].optimal(1e21)["params"]
  return {key: dataclasses.replace(law, params={**law.params,
                                                "k_N": float(ref / 1e21 ** law.params["a"])})
          if law.kind == "frontier" and "k_N" not in law.params else law
          for key, law in laws.items()}


LAWS: dict[str, PublishedLaw] = _anchored(_PUBLISHED)


def get(name: str) -> PublishedLaw:
  """The published law `name` (see `LAWS`); `chinchilla` is an alias of `hoffmann2022`."""
  key = {"chinchilla": "hoffmann2022", "hoffmann": "hoffmann2022", "epoch": "besiroglu2024",
         "besiroglu": "besiroglu2024", "kaplan": "kaplan2020"}.get(name, name)
  if key not in LAWS:
    raise ScalingError(f"unknown law {name!r}: choose one of {', '.join(LAWS)} or pass a fit "
                       "JSON written by `scaling fit --out`")
  return LAWS[key]
