"""A fake ladder workdir from a known law, for the fit's validation, provenance and figures."""

import json

import numpy as np

# A known law with the synthetic language's floor (Hoffmann et al. 2022, Eq. 2 form).
TRUE = {"E": 0.89, "A": 60.0, "B": 60.0, "alpha": 0.5, "beta": 0.33}
FLOOR = 0.89


def law(n, d):
  return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def ladder_rows(noise=0.004, seed=0, held_budget=1e12):
  """IsoFLOP runs at 4 budgets x 5 sizes around D = 20 N, plus one held-out rung at
  `held_budget` (>= 3x the largest fitted compute), as (N, D, C, budget, holdout, loss)."""
  rng = np.random.default_rng(seed)
  rows = []
  for c in (1e10, 3e10, 1e11, 3e11):
    n_star = np.sqrt(c / 120)
    for n in np.geomspace(n_star / 5, n_star * 5, 5):
      rows.append((n, c / (6 * n), c, c, 0))
  n = np.sqrt(held_budget / 120)
  rows.append((n, held_budget / (6 * n), held_budget, None, 1))
  return [(n, d, c, b, h, float(law(n, d) * np.exp(rng.normal(0, noise))))
          for n, d, c, b, h in rows]


def write_ladder(root, rows, *, failed=1):
  """A ladder workdir as `scaling ladder run` writes it: runs/<id>/{result,config}.json and
  metrics.jsonl with eval losses; the holdout mark in the run's config (`ladder.holdout`)."""
  for i, (n, d, c, b, h, loss) in enumerate(rows + [rows[0]] * failed):
    rid = f"rung{i:02d}"
    run = root / "runs" / rid
    run.mkdir(parents=True)
    status = "complete" if i < len(rows) else "failed"
    cfg = {"model": {"name": "fake", "params": n, "tokens": d},
           "data": {"name": "synthetic", "synthetic": {"support_exponent": 2.0}},
           "ladder": {"budget": b, "holdout": bool(h), "sweep": "held" if h else "iso"}}
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "result.json").write_text(json.dumps({
        **({"config_identity": f"cfg-{rid}"} if i == 0 else {}),  # newer records carry it
        "run_id": rid, "status": status, "config": cfg, "params_non_embedding": n,
        "params_active": n, "params_total": n * 1.2, "tokens": d, "flops": c,
        "final_eval_loss": loss if status == "complete" else None, "entropy_floor": FLOOR,
        "data": {"name": "synthetic", "spec": {"support_exponent": 2.0},
                 "floor_formula": "H = -sum w log w"}}))
    steps = np.linspace(0.1, 1.0, 5)
    (run / "metrics.jsonl").write_text("".join(json.dumps(
        {"step": int(s * 100), "tokens": s * d, "flops": s * c, "loss": float(law(n, s * d)),
         "eval_loss": float(law(n, s * d))}) + "\n" for s in steps))
  return str(root)


