"""Which tasks a run is scored on, and scoring one answer three ways (numpy only).

An answer is scored from the model's teacher-forced next-token predictions at its tokens
(`TaskExamples.answer` marks them): per-token NLL (the mean of -log p(answer token | prompt and
the answer before it), nats), per-token accuracy (the fraction of answer tokens that are the
model's argmax) and exact match (the fraction of problems whose every answer token is). Exact
match by teacher forcing is exactly greedy decoding's: greedy decoding reproduces the answer iff
the argmax at each answer position, given the answer so far, is the answer token. If answer
tokens were right independently with probability p, exact match over k tokens would be p^k
(Schaeffer et al. 2023, "Are Emergent Abilities of Large Language Models a Mirage?",
arXiv:2304.15004, Sec. 2); `scaling.fit.emergence` compares the two.
"""

from __future__ import annotations

import numpy as np

from scaling.errors import ScalingError

VALIDATION = "validation"
ANSWER_METRICS = ("nll", "token_accuracy", "exact_match")
DEFAULT = "default"


def validation_metrics(synthetic: bool) -> tuple[str, ...]:
  """The metrics of the `validation` task: `nll` and `excess` over the floor (synthetic), or
  `nll` and `bpb` (text)."""
  return ("nll", "excess") if synthetic else ("nll", "bpb")


def resolve(requested: str | None, lang=None) -> list[str]:
  """The task names of `--tasks` for a run.

  Args:
    requested: comma-separated names: `validation`, `recall`, `addition` (every k the language
      has), `addition<k>`, or `default` (None or empty too): `validation` plus every task the
      language has on (`data.synthetic.tasks`).
    lang: the run's `SyntheticLanguage`, or None for text data (which has `validation` only).

  Raises:
    ScalingError: an unknown name, or a task the run's data cannot pose.
  """
  names: list[str] = []
  for raw in (requested or DEFAULT).split(","):
    name = raw.strip()
    if not name:
      continue
    if name == DEFAULT:
      names += [VALIDATION] + list(lang.task_names() if lang is not None else ())
    elif name == VALIDATION:
      names.append(name)
    elif lang is None:
      raise ScalingError(f"--tasks={requested}: task {name!r} needs the synthetic language; a "
                         "text run has only 'validation' (nll, bpb)")
    elif name == "recall":
      if lang.spec.support_exponent <= 0:
        raise ScalingError(f"--tasks={requested}: recall needs data.synthetic.support_exponent "
                           "> 0 (a unique most likely token per slot); this run's is "
                           f"{lang.spec.support_exponent}")
      names.append(name)
    elif name == "addition" or (name.startswith("addition")
                                and name.removeprefix("addition").isdigit()):
      have = [t for t in lang.task_names() if t.startswith("addition")]
      pick = have if name == "addition" else [t for t in have if t == name]
      if not pick:
        raise ScalingError(f"--tasks={requested}: this run's language has no {name} task "
                           f"(data.synthetic.tasks={lang.spec.tasks!r}, addition_digits="
                           f"{lang.spec.addition_digits}); train with 'addition' in "
                           "data.synthetic.tasks to pose it")
      names += pick
    else:
      raise ScalingError(f"--tasks={requested}: unknown task {name!r}; choose from validation, "
                         "recall, addition, addition<k>, default")
  return list(dict.fromkeys(names))


def score(logp: np.ndarray, correct: np.ndarray, answer: np.ndarray) -> dict[str, float]:
  """The three scores of one task's problems (module doc).

  Args:
    logp: float [n, T], log-probability (nats) the model gave each target token.
    correct: bool [n, T], whether each target token was the model's argmax.
    answer: [n, T], 1 on answer targets, 0 elsewhere (every problem has an answer).

  Returns:
    `{nll, token_accuracy, exact_match}`: nats per answer token, fraction of answer tokens,
    fraction of problems.
  """
  answer = np.asarray(answer, np.float64) > 0
  if answer.ndim != 2 or not answer.any(axis=1).all():
    raise ValueError("every problem needs at least one answer token")
  logp, correct = np.asarray(logp, np.float64), np.asarray(correct, bool)
  tokens = answer.sum()
  return {"nll": float(-np.where(answer, logp, 0.0).sum() / tokens),
          "token_accuracy": float((correct & answer).sum() / tokens),
          "exact_match": float((correct | ~answer).all(axis=1).mean())}


def from_log_probs(log_probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(logp [n, T], correct [n, T]) from full next-token distributions `log_probs` [n, T, V]
  (a model's, or the generating process's) and `targets` [n, T]; argmax ties go to the lowest
  id, as `jnp.argmax` breaks them."""
  targets = np.asarray(targets)
  logp = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return logp, np.argmax(log_probs, axis=-1) == targets
