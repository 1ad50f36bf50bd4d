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
# # Emergence as a metric artifact
#
# Schaeffer et al. (2023, "Are emergent abilities of large language models a mirage?") argue
# that many "emergent" jumps come from the metric, not the model: if a model gets each token of
# an answer right with probability p(N) that rises smoothly with size N, then exact match on a
# K-token answer is p(N)^K, which stays near zero and then shoots up. This notebook shows the
# effect twice: first with the idealised smooth p(N) of `scaling.fit.emergence.synthetic_demo`
# (K = 1, 4, 8), then on models trained here, a small dense ladder scored on the validation split
# of the synthetic language, where we know the most likely next token exactly and can score
# per-token accuracy and exact match over the first K body tokens of each document.

# %% [markdown]
# ## Install
# `REPO_URL` is the one place that names the repository. When `scaling` is already importable
# the cell does nothing.

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
  extra = ("[tpu]" if os.environ.get("COLAB_TPU_ADDR") or os.path.exists("/dev/accel0")
           else "[gpu]" if shutil.which("nvidia-smi") else "")
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", CLONE_DIR + extra],
                 check=True)
  sys.path.insert(0, CLONE_DIR)

import jax  # noqa: E402

import scaling  # noqa: E402

ROOT = pathlib.Path(scaling.__file__).resolve().parents[1]  # the checkout: holds configs/
BACKEND = jax.default_backend()
print(f"backend: {BACKEND}; {jax.device_count()} device(s): {jax.devices()[0].device_kind}")

# %% [markdown]
# ## Parameters
# `SCALING_NOTEBOOK_SMOKE=1` (what CI sets) trains each rung for a handful of steps: a test of
# the plumbing. The full size takes a few minutes on a Colab CPU.

# %% tags=["parameters"]
import tempfile  # noqa: E402

SMOKE = os.environ.get("SCALING_NOTEBOOK_SMOKE", "") == "1"
KS = (1, 4, 8)  # answer lengths for exact match
DEPTHS = (1, 2) if SMOKE else (1, 2, 3, 4)  # ladder rungs, d_model = ASPECT x depth
ASPECT = 32
STEPS = 4 if SMOKE else 300  # every rung sees the same tokens
BATCH = 8 if SMOKE else 32
SEQ_LEN = 64  # two whole 32-token documents per window
EVAL_WINDOWS = 16 if SMOKE else 512  # validation windows scored (two documents each)
WORKDIR = (tempfile.mkdtemp(prefix="scaling-emergence-") if SMOKE
           else os.path.abspath("runs/emergence"))
DATA_DIR = os.path.join(WORKDIR, "data") if SMOKE else ""
FIGURES = os.environ.get("SCALING_NOTEBOOK_FIGURES", "") or os.path.join(WORKDIR, "figures")

# %% [markdown]
# ## 1. The idealised demonstration
# Per-token accuracy p(N) is a logistic in log N (smooth by construction); exact match on a
# K-token answer is p^K; the log-likelihood K log p is smooth again. `sharpness` is the share of
# a metric's whole rise that happens between two adjacent sizes: 0.1 for an even rise over these
# 11 sizes, near 1 for a jump.

# %%
from IPython.display import Image, display  # noqa: E402

from scaling.fit import emergence  # noqa: E402

demo = emergence.synthetic_demo(ks=KS)
for k in KS:
  print(f"K = {k}: exact match rises from {demo['exact_match'][k][0]:.3f} to "
        f"{demo['exact_match'][k][-1]:.3f}; sharpness {demo['sharpness'][k]:.2f}")
smooth = emergence.sharpness(demo["params"], demo["token_accuracy"])
print(f"per-token accuracy sharpness {smooth:.2f}")
display(Image(emergence.plot_demo(os.path.join(FIGURES, "emergence_demo"), demo)[0]))

# %% [markdown]
# ## 2. The same analysis on a ladder trained here
# Each synthetic document is `[BOS, 2 context digits, 29 body tokens]`, and body token t of
# context k is drawn from a fixed four-token distribution whose most likely token has
# probability 0.70. A model "knows" a token when its top prediction is that most likely token
# (what a perfect model would predict), so per-token accuracy can reach 1. Exact match on K
# tokens asks for the first K body tokens of a document all to be right: a K-token answer to
# the prompt "context code".

# %%
import numpy as np  # noqa: E402

from scaling.config import load  # noqa: E402
from scaling.models.shapes import ladder_shape  # noqa: E402
from scaling.train.loop import train  # noqa: E402


def rung_config(depth: int):
  cfg = load(str(ROOT / "configs" / "dense.py:tiny"))
  cfg.data.data_dir = DATA_DIR
  cfg.data.synthetic.update(num_contexts=1024, train_tokens=2**18 if SMOKE else 2**22,
                            validation_tokens=2**15 if SMOKE else 2**18)
  cfg.model.update(ladder_shape(depth, aspect=ASPECT, head_dim=16,
                                vocab_size=cfg.data.synthetic.vocab_size, max_len=SEQ_LEN))
  cfg.model.dtype = "float32" if BACKEND == "cpu" else "bfloat16"
  cfg.train.update(steps=STEPS, global_batch=BATCH, seq_len=SEQ_LEN,
                   warmup_steps=max(1, STEPS // 10), eval_every=STEPS, eval_batches=4,
                   checkpoint_every=STEPS, log_every=max(1, STEPS // 4))
  return cfg


RUNGS = {depth: rung_config(depth) for depth in DEPTHS}
records = {}
for depth, cfg in RUNGS.items():
  workdir = os.path.join(WORKDIR, f"d{depth}_a{ASPECT}_s{STEPS}_b{BATCH}_l{SEQ_LEN}")
  records[depth] = train(cfg, workdir)
  r = records[depth]
  print(f"depth {depth}: N = {r['params_non_embedding']:>9,d}, D = {r['tokens']:,d} tokens, "
        f"eval loss {r['final_eval_loss']:.4f} nats/token (floor {r['entropy_floor']:.4f})")

# %% [markdown]
# ### Score every model on the same validation documents
# The generating tables (`SyntheticLanguage`) give, for each document, its context (decoded from
# the two marker digits) and so the most likely token at every body position. Each model is
# restored from its last checkpoint and its top-1 predictions are compared with those tokens.

# %%
from flax import nnx  # noqa: E402

from scaling.data import SyntheticLanguage, SyntheticSpec, make_batches  # noqa: E402
from scaling.models.dense import abstract_model  # noqa: E402
from scaling.parallel.mesh import make_mesh  # noqa: E402
from scaling.train.checkpoint import Checkpointer  # noqa: E402
from scaling.train.loop import build_trainer  # noqa: E402

spec = SyntheticSpec(**RUNGS[DEPTHS[0]].data.synthetic.to_dict())
lang = SyntheticLanguage(spec)
DOC, M, L = spec.doc_length, spec.marker_digits, spec.body_length
assert SEQ_LEN % DOC == 0, "windows must hold whole documents"
powers = spec.marker_base ** np.arange(M - 1, -1, -1)
context_of_code = {int(c): k for k, c in enumerate(((lang.codes - 1) * powers).sum(-1))}

val = make_batches(RUNGS[DEPTHS[0]].data, split="validation", seq_len=SEQ_LEN,
                   global_batch=BATCH, seed=0)
inputs = np.concatenate([val[i]["inputs"] for i in range(-(-EVAL_WINDOWS // BATCH))])
inputs = inputs[:EVAL_WINDOWS]
docs = inputs.reshape(-1, DOC)  # [documents, 32]: BOS, marker digits, body
assert (docs[:, 0] == 0).all(), "every window starts at a document"
contexts = np.array([context_of_code[int(c)] for c in ((docs[:, 1:1 + M] - 1) * powers).sum(-1)])
# The target at input position i is token i + 1, so body token t of a document is predicted
# at offset M + t within it; the best guess is the first (most likely) token of its support.
best = lang.supports[contexts, :, 0]  # [documents, L]
print(f"{len(docs)} documents, {docs.size} tokens; top-1 accuracy of the perfect model "
      f"{lang.weights[0]:.2f} on sampled tokens, 1.0 on the most likely token")


def restore_params(cfg, workdir):
  mesh = make_mesh(cfg.mesh)
  trainer = build_trainer(cfg, mesh)
  ckpt = Checkpointer(workdir, every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints)
  _, state = ckpt.restore_latest(trainer.state)
  ckpt.close()
  return mesh, state["params"]


correct = []  # [models, documents, L] 0/1: top-1 prediction == most likely token
for depth, cfg in RUNGS.items():
  mesh, params = restore_params(cfg, os.path.join(WORKDIR, records[depth]["run_id"]))
  graphdef, _ = nnx.split(abstract_model(cfg))
  predict = jax.jit(lambda p, x, g=graphdef: nnx.merge(g, p)(x).argmax(-1))
  with jax.set_mesh(mesh):
    top1 = np.concatenate([np.asarray(predict(params, inputs[i:i + BATCH]))
                           for i in range(0, len(inputs), BATCH)])
  top1 = top1.reshape(-1, DOC)[:, M:M + L]  # predictions of the L body tokens
  correct.append((top1 == best).astype(np.float64))
correct = np.stack(correct)

# %% [markdown]
# ### Per-token accuracy, exact match over K tokens, and loss, against N

# %%
import matplotlib.pyplot as plt  # noqa: E402

n = np.array([records[d]["params_non_embedding"] for d in DEPTHS], np.float64)
losses = np.array([records[d]["final_eval_loss"] for d in DEPTHS])
token_acc = emergence.metrics(correct)["token_accuracy"]
exact = {k: emergence.metrics(correct[:, :, :k])["exact_match"] for k in KS}
print(f"{'N':>10s} {'loss':>7s} {'p(N)':>6s} " + " ".join(f"{f'EM K={k}':>8s}" for k in KS)
      + "   " + " ".join(f"{f'p^{k}':>6s}" for k in KS))
for i in range(len(n)):
  print(f"{n[i]:10,.0f} {losses[i]:7.3f} {token_acc[i]:6.3f} "
        + " ".join(f"{exact[k][i]:8.3f}" for k in KS) + "   "
        + " ".join(f"{token_acc[i] ** k:6.3f}" for k in KS))
if len(n) > 2:
  for k in KS:
    print(f"K = {k}: sharpness of exact match {emergence.sharpness(np.log(n), exact[k]):.2f} "
          f"(per-token accuracy {emergence.sharpness(np.log(n), token_acc):.2f})")

fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
axes[0].plot(n, token_acc, "o-", color="k")
axes[0].set_ylabel("per-token accuracy p(N) (fraction)")
for j, k in enumerate(KS):
  axes[1].plot(n, exact[k], "o-", color=f"C{j}", label=f"measured, K = {k}")
  axes[1].plot(n, token_acc ** k, ":", color=f"C{j}", label=f"p(N)^{k}")
axes[1].set_ylabel("exact match over K tokens (fraction)")
axes[1].legend(fontsize=7)
axes[2].plot(n, losses, "o-", color="k", label="eval loss")
axes[2].axhline(records[DEPTHS[0]]["entropy_floor"], color="gray", ls="--", label="entropy floor")
axes[2].set_ylabel("eval loss (nats/token)")
axes[2].legend(fontsize=7)
for ax in axes:
  ax.set_xscale("log")
  ax.set_xlabel("non-embedding parameters N")
axes[1].set_title(f"ladder trained here, {records[DEPTHS[0]]['tokens']:,} tokens per rung")
fig.tight_layout()
os.makedirs(FIGURES, exist_ok=True)
fig.savefig(os.path.join(FIGURES, "emergence_ladder.png"), dpi=120)
display(fig)
plt.close(fig)

# %% [markdown]
# ## What to take away
# * The same underlying ability can look smooth or sudden depending only on how it is scored:
#   per-token accuracy and log-likelihood change gradually with size, while exact match over K
#   tokens, roughly p^K, sits near zero and then climbs steeply, the more so the longer the
#   answer (K = 8 against K = 1).
# * On the ladder trained here, measured exact match tracks p(N)^K closely: what looks like a
#   capability appearing at some size is the power K applied to a per-token accuracy that was
#   improving all along. (In the smoke run the models are barely trained, so all scores are
#   near zero; run the full size to see the curves.)
# * Before calling a jump "emergent", plot a continuous metric (per-token accuracy or loss) of
#   the same task against N; if it is smooth, the jump is in the metric.
