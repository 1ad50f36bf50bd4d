# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: a tiny scaling ladder, a Chinchilla fit, and a plan 1,000× larger
#
# This notebook installs `scaling`, reports which backend Colab gave you (TPU, GPU or CPU),
# trains a small ladder of dense transformers (a few depths of the ladder rule
# `scaling.models.shapes.ladder_shape`, each at a few token counts) on the embedded synthetic
# language, fits the Chinchilla law L(N, D) = E + A/N^α + B/D^β to the final evaluation losses
# (Hoffmann et al. 2022, Approach 3), plots the fit beside the exact entropy floor of the
# synthetic data (the loss a perfect model would reach, which the fitted E estimates), and asks
# the planner for the compute-optimal model size, token count and loss at a budget 1,000× larger
# than the largest run. Every number here comes from models trained in this notebook; nothing is
# downloaded once the package is installed.

# %% [markdown]
# ## Install
# `REPO_URL` is the one place that names the repository. When `scaling` is already importable
# (a local checkout, CI, or a second run of this cell) the cell does nothing.

# %%
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

REPO_URL = "https://github.com/OWNER/scaling.git"  # set to this repository's URL
CLONE_DIR = "/content/scaling" if os.path.isdir("/content") else os.path.expanduser("~/scaling")

if importlib.util.find_spec("scaling") is None:
  if not os.path.isdir(CLONE_DIR):
    subprocess.run(["git", "clone", "--depth=1", REPO_URL, CLONE_DIR], check=True)
  # Keep Colab's accelerator: the [tpu] / [gpu] extras install the matching jax.
  extra = ("[tpu]" if os.environ.get("COLAB_TPU_ADDR") or os.path.exists("/dev/accel0")
           else "[gpu]" if shutil.which("nvidia-smi") else "")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", CLONE_DIR + extra],
                 check=True)
  sys.path.insert(0, CLONE_DIR)  # the running kernel does not re-read site-packages

import scaling  # noqa: E402

ROOT = pathlib.Path(scaling.__file__).resolve().parents[1]  # the checkout: holds configs/
print("scaling from", ROOT)

# %% [markdown]
# ## Which backend did we get?

# %%
import jax  # noqa: E402

BACKEND = jax.default_backend()  # "tpu", "gpu" or "cpu"
devices = jax.devices()
print(f"backend: {BACKEND}; {len(devices)} device(s): {devices[0].device_kind}")
for d in devices:
  print("  ", d)

# %% [markdown]
# ## Parameters
# `SCALING_NOTEBOOK_SMOKE=1` (what CI sets) shrinks everything so the notebook runs in about a
# minute on CPU; the numbers it prints are then only a test of the plumbing. The full size takes a
# few minutes on a Colab CPU; on a GPU or TPU raise `DEPTHS` and `STEPS` for a better fit.

# %% tags=["parameters"]
import tempfile  # noqa: E402

SMOKE = os.environ.get("SCALING_NOTEBOOK_SMOKE", "") == "1"
DEPTHS = (1, 2, 3)  # ladder rungs: d_model = ASPECT x depth, N ~ 12 ASPECT^2 depth^3
ASPECT = 32
STEPS = (4, 8) if SMOKE else (50, 100, 200)  # token counts: steps x BATCH x SEQ_LEN
BATCH = 8 if SMOKE else 32
SEQ_LEN = 64  # two 32-token synthetic documents per window
EVAL_BATCHES = 2 if SMOKE else 8
BOOTSTRAP = 0 if SMOKE else 200  # bootstrap replicates of the fit (0: none)
SCALE_UP = 1000.0  # plan for this many times the largest run's compute
WORKDIR = (tempfile.mkdtemp(prefix="scaling-quickstart-") if SMOKE
           else os.path.abspath("runs/quickstart"))
DATA_DIR = os.path.join(WORKDIR, "data") if SMOKE else ""  # "": $SCALING_DATA_DIR or ~/.cache
FIGURES = os.environ.get("SCALING_NOTEBOOK_FIGURES", "")  # save PNGs here when set

# %% [markdown]
# ## The data: a synthetic language with a known entropy floor
# Documents are a context code followed by 29 body tokens; each body token is drawn from a
# four-token distribution fixed by (context, position). A model that knew every context would
# still pay the entropy of that distribution, in nats per token: the floor.

# %%
from scaling.config import load  # noqa: E402
from scaling.data import data_info  # noqa: E402
from scaling.models.shapes import ladder_shape  # noqa: E402


def rung_config(depth: int, steps: int):
  """One run of the ladder: the `tiny` preset reshaped to ladder depth `depth`, `steps` steps."""
  cfg = load(str(ROOT / "configs" / "dense.py:tiny"))
  cfg.data.data_dir = DATA_DIR
  # A smaller language than the default, so the larger rungs can learn a good part of it.
  cfg.data.synthetic.update(num_contexts=1024, train_tokens=2**18 if SMOKE else 2**22,
                            validation_tokens=2**15 if SMOKE else 2**18)
  vocab = cfg.data.synthetic.vocab_size
  cfg.model.update(ladder_shape(depth, aspect=ASPECT, head_dim=16, vocab_size=vocab,
                                max_len=SEQ_LEN))
  cfg.model.dtype = "float32" if BACKEND == "cpu" else "bfloat16"  # bf16 is slow on CPUs
  cfg.train.update(steps=steps, global_batch=BATCH, seq_len=SEQ_LEN,
                   warmup_steps=max(1, steps // 10), eval_every=steps, eval_batches=EVAL_BATCHES,
                   checkpoint_every=steps, log_every=max(1, steps // 4))
  return cfg


info = data_info(rung_config(1, 1).data)
FLOOR = info.entropy_floor
print(f"entropy floor: {FLOOR:.4f} nats/token; "
      f"unigram entropy (a model that ignores context): {info.metadata['unigram_entropy']:.3f}")

# %% [markdown]
# ## Train the ladder
# `scaling.train.loop.train(cfg, workdir)` trains one run and returns its run record (the same
# `result.json` that `scaling train` writes). Re-running this cell skips finished runs. The runs
# of one depth share their jitted programs (`Programs`, as a ladder's workers do): only the
# first of them traces and compiles.

# %%
import time  # noqa: E402

from scaling.train.loop import train  # noqa: E402
from scaling.train.programs import Programs  # noqa: E402

records = []
programs = Programs()
start = time.time()
for depth in DEPTHS:
  for steps in STEPS:
    run_id = f"d{depth}_a{ASPECT}_s{steps}_b{BATCH}_l{SEQ_LEN}"
    rec = train(rung_config(depth, steps), os.path.join(WORKDIR, run_id), programs=programs)
    records.append(rec)
    print(f"{run_id:24s} N={rec['params_non_embedding']:>9,d} D={rec['tokens']:>9,d} "
          f"C={rec['flops']:.2e} FLOPs  eval loss {rec['final_eval_loss']:.4f}")
print(f"{len(records)} runs in {time.time() - start:.0f} s on {BACKEND}")

# %% [markdown]
# ## The results table
# One row per run: N (non-embedding parameters), D (tokens), C (FLOPs, Chinchilla accounting)
# and the final evaluation loss: the columns `scaling fit` reads.

# %%
import csv  # noqa: E402

from scaling.fit import table as table_lib  # noqa: E402

TABLE = os.path.join(WORKDIR, "results.csv")
with open(TABLE, "w", newline="") as f:
  writer = csv.DictWriter(f, ["run_id", "params", "tokens", "flops", "loss"])
  writer.writeheader()
  for r in records:
    writer.writerow({"run_id": r["run_id"], "params": r["params_non_embedding"],
                     "tokens": r["tokens"], "flops": r["flops"], "loss": r["final_eval_loss"]})
results = table_lib.load_table(TABLE)
print(open(TABLE).read())

# %% [markdown]
# ## Fit the Chinchilla law (Approach 3)
# Huber loss on log L, L-BFGS from Hoffmann's grid of starts; with `BOOTSTRAP` > 0 the runs are
# resampled to give 95% intervals.

# %%
import numpy as np  # noqa: E402

from scaling.fit import chinchilla  # noqa: E402

c_max = float(results.flops.max())
fit = chinchilla.approach3(results, bootstrap=BOOTSTRAP, predict_flops=SCALE_UP * c_max)
ci = fit.intervals()
for k, v in fit.params.items():
  band = f"  [{ci[k][0]:.3g}, {ci[k][1]:.3g}]" if k in ci else ""
  print(f"{k:>6s} = {v:.4g}{band}")
print(f"fitted E = {fit.params['E']:.3f} nats/token vs the exact floor {FLOOR:.3f}")
print(f"a = {fit.derived['a']:.3f}, b = {fit.derived['b']:.3f} (N_opt ~ C^a, D_opt ~ C^b)")

# %% [markdown]
# ## Plot: measured losses, the fitted law, and the floor

# %%
import matplotlib.pyplot as plt  # noqa: E402

p = fit.params
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
colors = plt.get_cmap("viridis")(np.linspace(0, 0.85, len(DEPTHS)))
d_grid = np.geomspace(results.tokens.min() / 2, results.tokens.max() * 4, 100)
for color, n in zip(colors, np.unique(results.params), strict=True):
  sel = results.params == n
  ax0.scatter(results.tokens[sel], results.loss[sel], color=color, zorder=3,
              label=f"N = {n:,.0f}")
  ax0.plot(d_grid, p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d_grid ** p["beta"],
           color=color, lw=1)
for ax in (ax0, ax1):
  ax.axhline(FLOOR, color="k", ls="--", lw=1, label=f"entropy floor {FLOOR:.3f}")
  ax.axhline(p["E"], color="C3", ls=":", lw=1.5, label=f"fitted E {p['E']:.3f}")
ax0.set_xscale("log")
ax0.set_xlabel("training tokens D (tokens)")
ax0.set_ylabel("final eval loss (nats/token)")
ax0.set_title("loss against data, per model size; lines: fitted L(N, D)")
ax0.legend(fontsize=8)

from scaling.fit.laws import chinchilla_optimal  # noqa: E402

c_grid = np.geomspace(results.flops.min() / 2, SCALE_UP * c_max * 2, 200)
k_flops = fit.info.get("flops_per_param_token", 6.0)
frontier = chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"], c_grid, k_flops)
sc = ax1.scatter(results.flops, results.loss, c=np.log10(results.params), cmap="viridis",
                 zorder=3)
fig.colorbar(sc, ax=ax1, label="log10 parameters N")
ax1.plot(c_grid, frontier["loss"], color="C3", label="fitted compute-optimal frontier")
ax1.axvline(SCALE_UP * c_max, color="gray", lw=0.8, label=f"{SCALE_UP:,.0f}x largest run")
ax1.set_xscale("log")
ax1.set_xlabel("training compute C (FLOPs)")
ax1.set_ylabel("loss (nats/token)")
ax1.set_title("loss against compute")
ax1.legend(fontsize=8)
fig.tight_layout()
if FIGURES:
  os.makedirs(FIGURES, exist_ok=True)
  fig.savefig(os.path.join(FIGURES, "quickstart_fit.png"), dpi=120)
plt.show()

# %% [markdown]
# ## Plan a run 1,000× larger
# `scaling.fit.plan.plan` is what `scaling plan --flops=C --law=FIT.json` prints. It reads the
# fit as JSON (with its bootstrap samples, for intervals); the textbook D = 20 N rule is beside it.

# %%
import json  # noqa: E402

from scaling.fit.plan import plan  # noqa: E402

FIT_JSON = os.path.join(WORKDIR, "fit.json")
with open(FIT_JSON, "w") as f:
  json.dump(fit.to_json(include_samples=True), f)
budget = SCALE_UP * c_max
for law in (FIT_JSON, "ratio20"):
  out = plan(law, budget)
  loss = "n/a" if out["loss"] is None else f"{out['loss']:.3f} nats/token"
  name = "this fit" if law == FIT_JSON else law
  print(f"{name:>9s}: C = {budget:.2e} FLOPs -> N_opt = {out['params']:,.0f} params, "
        f"D_opt = {out['tokens']:,.0f} tokens ({out['tokens_per_param']:.1f} tokens/param), "
        f"loss {loss}")
  if "intervals" in out:
    lo, hi = out["intervals"]["params"]
    print(f"{'':>11s}95% interval for N_opt: [{lo:,.0f}, {hi:,.0f}]")
  if out["loss"] is not None and out["loss"] < FLOOR:
    print(f"{'':>11s}the predicted loss is BELOW the entropy floor {FLOOR:.3f}: impossible, so "
          "this extrapolation cannot be trusted (E is not pinned down by these runs)")

# %% [markdown]
# ## What to take away
# * A scaling ladder is a handful of small, cheap runs; `train(cfg, workdir)` gives each one a
#   run record, and the records make the table a law is fitted to.
# * The fitted E is an estimate of the irreducible loss, and here the true floor is known, so
#   you can check it. With a few minutes of CPU training every run is still far above the floor
#   (losses of about 2 to 4.5 nats against a floor of 0.89), and then E is barely constrained:
#   the fit can put it anywhere from zero to well above the floor, and its bootstrap interval
#   says so. A prediction below the floor is impossible, and the plan cell flags it.
# * The planner turns the fit into a recipe for a run 1,000× bigger (N_opt, D_opt and the
#   predicted loss). Three orders of magnitude from a tiny ladder is exactly where the interval
#   matters: read the range, not the point. With real data there is no floor to check against,
#   which is why ladders are built to reach close to the regime you extrapolate to.
# * On a GPU or TPU runtime the same cells run unchanged; raise `DEPTHS` and `STEPS` in the
#   parameters cell for a ladder whose losses approach the floor and pin E down.
