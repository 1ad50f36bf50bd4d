"""A synthetic language with a known entropy floor, for scaling-law experiments.

The language follows the quantization model of neural scaling (Michaud et al. 2023,
"The Quantization Model of Neural Scaling", arXiv:2303.13506): the data is a mixture of many
independent "quanta" (here: contexts) with Zipf-distributed frequencies, and each quantum is a
separate piece of knowledge a model must memorise. A model that has learned the `n` most frequent
contexts has an excess loss proportional to the probability mass of the contexts it has not
learned, sum_{k>n} p_k ~ n^-(zipf_exponent - 1), so loss falls as a power law in the number of
learned quanta, hence in model size and (through how often each context is seen) in data.

Definition (all tokens are integer ids in `[0, vocab_size)`):

* Vocabulary: id 0 is `BOS`; ids `1..B` are context-marker digits, `B = ceil(K^(1/M))` for
  `K = num_contexts` and `M = marker_digits`; the remaining `A = vocab_size - 1 - B` ids are the
  body alphabet.
* Context frequencies: `p_k = k^-s / sum_j j^-s` for ranks `k = 1..K`, `s = zipf_exponent`
  (Zipf's law; Michaud et al. eq. 2 with `s = alpha + 1`).
* Each context `k` has a distinct random `M`-digit base-`B` code, and for each of its
  `L = body_length` slots `t` a support `S(k, t)` of `m = support_size` distinct body tokens with
  weights `w_j = (j + 1)^-beta / sum_i (i + 1)^-beta`, `beta = support_exponent`: the slot's
  most likely token has weight `w_0`, the next `w_1`, and so on.
* A document is `[BOS, code(k)_1..code(k)_M, b_1..b_L]` with `k ~ p` and each body token
  `b_t = S(k, t)_j`, `j ~ w`, independent of everything else given `(k, t)`. Documents are i.i.d.
  and concatenated into one token stream.

Scored targets and the entropy floor. A target token is *scored* (mask 1) when it is a body token
whose document's `BOS` lies inside the visible window. Then the prefix shows the context code
(hence `k`) and the slot `t` (its offset from `BOS`), and `b_t` is independent of all other
tokens given `(k, t)`, so the Bayes-optimal predictor assigns it exactly `w_j` and the expected
loss of every scored target, in nats, is the entropy of `w`:

    H_floor = -sum_{j<m} w_j log w_j              (independent of k, t, and of the window)

This is exact, not an estimate: since each scored target has the same conditional entropy, the
expected mean loss over mask==1 targets of any window equals H_floor. `BOS`, marker digits, and
body tokens whose document started before the window are masked out (they are either
unpredictable by design or their context is not visible).

Reference losses (all exact, in nats per scored token):
* `unigram_entropy`: a model that only knows the marginal distribution of body tokens,
  H(u) with u(x) = (1/L) sum_{k,t} p_k sum_j w_j [S(k,t)_j = x] (uniform over slots, as within
  whole documents).
* `quanta_curve`: the loss of a model that knows the distributions of the `n` most frequent
  contexts exactly and, for the others, only the per-slot mixture of the unknown contexts:
  L(n) = P(k<=n) H_floor + (1/L) sum_t P(k>n) H(u_t^{>n}), the quantization model's L(n).

Tasks (`tasks`, off by default: with `tasks=""` the language, its data and its folder name are
exactly as without this section). Each is scored by `scaling eval` three ways (per-token NLL of
the answer, per-token accuracy, whole-answer exact match; `scaling.evals.tasks`), and the exact
scores of the Bayes-optimal predictor (the generating process) go in the metadata:

* `recall`: the prompt is `[BOS, code(k)]`, the answer the context's modal body
  `S(k, 1)_0 .. S(k, L)_0` (L tokens). Every context is asked equally (distinct contexts in a
  fixed random order), so a score is the fraction of the language's contexts a model recalls;
  weighted by p the most frequent context, which even a context-blind model gets, would dominate.
  It needs no data of its own: every document trains it. The generating process gives each
  answer token probability w_0, so its Bayes scores are NLL = -log w_0 nats per token, accuracy
  1 and exact match 1 (`support_exponent > 0` makes the mode unique). A context-blind
  predictor (one that only knows the per-slot mixture u_t of all contexts) scores exactly
  `recall_context_blind`.
* `addition`: `k`-digit addition for k = 1..`addition_digits`, documents mixed into the stream
  at the fraction `addition_fraction`, with 13 token ids of their own at the top of the
  vocabulary (digits 0-9, `+`, `=`, PAD): `[BOS, a_1..a_k, +, b_1..b_k, =, c_1..c_{k+1}, PAD..]`,
  every number written least-significant digit first (the order in which small transformers
  learn addition: Lee et al. 2023, "Teaching Arithmetic to Small Transformers",
  arXiv:2307.03381) and zero-padded to k (operands, uniform in [0, 10^k)) and k + 1 (the sum)
  digits, padded to the document length. The answer is the k + 1 sum digits; it is a function
  of the visible prompt, so the Bayes scores are NLL 0, accuracy 1, exact match 1. Tasks
  `addition1` .. `addition<K>` score each k separately (exact match over k + 1 digits).

With addition on, the validation mask (`window_mask(..., split="validation")`) scores language
body tokens only, so the eval loss keeps the exact floor H_floor; the train mask also scores the
sum digits of addition documents, so the model learns them, and its expected loss per scored
target is `train_entropy_floor` (a ratio of expectations over documents).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math

import numpy as np

from scaling.errors import ScalingError

BOS = 0

# Spawn keys that separate the random streams of one seed: the language's tables and each split.
_LANGUAGE_STREAM = 0
_SPLIT_STREAMS = {"train": 1, "validation": 2}

# Documents per stored record. Part of the on-disk layout: changing it changes the data, so it
# is folded into the builder's config hash.
DOCS_PER_RECORD = 128

TASKS = ("recall", "addition")  # the names `tasks` takes (module docstring)
# Addition's own ids, at the top of the vocabulary: digits 0-9, then "+", "=", PAD.
ADDITION_IDS = 13
PLUS, EQUALS, PAD = 10, 11, 12  # offsets from `SyntheticSpec.addition_base`
MAX_ADDITION_DIGITS = 9  # operands below 10^9: sums fit int64 with room
# Spawn keys of the fixed task evaluation sets (after the language and split streams).
_TASK_STREAMS = {"recall": 3, "addition": 4}
# Knobs that change nothing while their task is off: left out of the fingerprint then, so the
# folder (and the data) of a language without tasks is what it was before tasks existed.
_TASK_KNOBS = {"tasks": None, "addition_fraction": "addition", "addition_digits": "addition"}


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """Knobs of the synthetic language (`data.synthetic.*` in the config)."""

  vocab_size: int = 256
  num_contexts: int = 4096
  zipf_exponent: float = 1.5
  marker_digits: int = 2
  body_length: int = 29
  support_size: int = 4
  support_exponent: float = 2.0
  seed: int = 0
  train_tokens: int = 4_194_304
  validation_tokens: int = 1_048_576
  tasks: str = ""  # comma-separated `TASKS` ("recall,addition"); "" = the language alone
  addition_fraction: float = 0.05  # share of documents that are addition problems
  addition_digits: int = 5  # k = 1 .. addition_digits

  @property
  def task_list(self) -> tuple[str, ...]:
    """The enabled tasks, in `TASKS` order ("" -> ())."""
    named = {t.strip() for t in str(self.tasks).split(",") if t.strip()}
    return tuple(t for t in TASKS if t in named)

  @property
  def addition(self) -> bool:
    return "addition" in self.task_list

  @property
  def addition_base(self) -> int:
    """The id of digit 0 of the addition tokens (digits, "+", "=", PAD follow it)."""
    return self.vocab_size - ADDITION_IDS

  @property
  def marker_base(self) -> int:
    """Digits per marker position, B = ceil(K^(1/M)), computed without float rounding."""
    base = max(2, math.ceil(self.num_contexts ** (1.0 / self.marker_digits)) - 1)
    while base ** self.marker_digits < self.num_contexts:
      base += 1
    return base

  @property
  def body_alphabet(self) -> int:
    """Number of body token ids, A = vocab_size - 1 - B (- 13 with addition on)."""
    return self.vocab_size - 1 - self.marker_base - (ADDITION_IDS if self.addition else 0)

  @property
  def doc_length(self) -> int:
    """Tokens per document: BOS, M marker digits, L body tokens."""
    return 1 + self.marker_digits + self.body_length

  def validate(self) -> None:
    """Raises `ScalingError` naming the `data.synthetic` field when the knobs are inconsistent."""
    f = "data.synthetic."
    positive = ("vocab_size", "num_contexts", "marker_digits", "body_length", "support_size",
                "train_tokens", "validation_tokens")
    for name in positive:
      if int(getattr(self, name)) < 1:
        raise ScalingError(f"{f}{name}={getattr(self, name)} must be a positive integer")
    if self.zipf_exponent <= 1.0:
      raise ScalingError(f"{f}zipf_exponent={self.zipf_exponent} must be > 1 (p_k ~ k^-s with "
                         "s = 1 + alpha, alpha > 0, so that loss falls as a power law)")
    if self.support_exponent < 0:
      raise ScalingError(f"{f}support_exponent={self.support_exponent} must be >= 0")
    if self.vocab_size > 65535:
      raise ScalingError(f"{f}vocab_size={self.vocab_size} must be at most 65535")
    if self.body_alphabet < 2 * self.support_size:
      raise ScalingError(
          f"{f}vocab_size={self.vocab_size} leaves only {self.body_alphabet} body tokens after BOS "
          f"and {self.marker_base} marker digits"
          + (f" and {ADDITION_IDS} addition ids" if self.addition else "")
          + f" (num_contexts={self.num_contexts}, "
          f"marker_digits={self.marker_digits}); need at least 2*support_size="
          f"{2 * self.support_size}: raise {f}vocab_size or {f}marker_digits, or lower "
          f"{f}num_contexts")
    if not 0 <= self.seed < 2**63:
      raise ScalingError(f"{f}seed={self.seed} must be a non-negative integer")
    self._validate_tasks()

  def _validate_tasks(self) -> None:
    f = "data.synthetic."
    unknown = sorted({t.strip() for t in str(self.tasks).split(",") if t.strip()} - set(TASKS))
    if unknown:
      raise ScalingError(f"{f}tasks={self.tasks!r}: unknown task {unknown[0]!r}; choose a "
                         f"comma-separated subset of {', '.join(TASKS)} (or '' for none)")
    if "recall" in self.task_list and self.support_exponent <= 0:
      raise ScalingError(f"{f}support_exponent={self.support_exponent}: the recall task needs "
                         "> 0, so that every slot has one most likely token (its answer)")
    if not self.addition:
      return
    if not 0.0 < self.addition_fraction < 1.0:
      raise ScalingError(f"{f}addition_fraction={self.addition_fraction} must be in (0, 1): "
                         "the share of documents that are addition problems, e.g. 0.05")
    if not 1 <= self.addition_digits <= MAX_ADDITION_DIGITS:
      raise ScalingError(f"{f}addition_digits={self.addition_digits} must be in "
                         f"[1, {MAX_ADDITION_DIGITS}]")
    need = 3 * self.addition_digits + 4  # BOS, a, +, b, =, the k + 1 digits of the sum
    if self.doc_length < need:
      raise ScalingError(
          f"{f}body_length={self.body_length}: a {self.addition_digits}-digit addition problem "
          f"takes {need} tokens but documents have {self.doc_length}; raise body_length to "
          f"{need - 1 - self.marker_digits} or lower {f}addition_digits")

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  def fingerprint(self) -> str:
    """A short hash of every knob that changes the generated data (names the prepared folder).

    Task knobs count only while their task is on (`_TASK_KNOBS`), so a language without tasks
    keeps the folder name it had before tasks existed.
    """
    payload = json.dumps({**self.active_knobs(), "docs_per_record": DOCS_PER_RECORD},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]

  def active_knobs(self) -> dict:
    """`to_json()` without the task knobs of tasks that are off (they change nothing)."""
    knobs = self.to_json()
    for name, task in _TASK_KNOBS.items():
      if not self.task_list or (task is not None and task not in self.task_list):
        knobs.pop(name)
    return knobs


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
  """Shannon entropy in nats along `axis`, with 0 log 0 = 0."""
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = np.where(p > 0, -p * np.log(p), 0.0)
  return terms.sum(axis=axis)


def _sample_distinct(rng: np.random.Generator, rows: int, m: int, alphabet: int) -> np.ndarray:
  """`rows` uniformly random ordered m-subsets of `range(alphabet)`: int array [rows, m].

  Rejection sampling: draw with replacement, redraw rows that repeat a value. With m << alphabet
  only a few percent of rows are redrawn per round.
  """
  out = rng.integers(0, alphabet, size=(rows, m))
  bad = np.arange(rows)
  while True:
    sub = np.sort(out[bad], axis=1)
    dup = (sub[:, 1:] == sub[:, :-1]).any(axis=1)
    bad = bad[dup]
    if bad.size == 0:
      return out
    out[bad] = rng.integers(0, alphabet, size=(bad.size, m))


@dataclasses.dataclass(frozen=True)
class TaskExamples:
  """The evaluation set of one task: problems as whole documents.

  Attributes:
    name: the task (`recall`, `addition3`, ...).
    tokens: int32 [n, doc_length], each row one problem from its BOS (PAD after a short one).
    answer: float32 [n, doc_length - 1], 1 on the targets (`tokens[:, 1:]`) that are the answer.
    answer_tokens: tokens per answer (the exponent k of exact match ~ p^k).
  """

  name: str
  tokens: np.ndarray
  answer: np.ndarray
  answer_tokens: int


class SyntheticLanguage:
  """The generating distributions of one `SyntheticSpec`, and exact quantities derived from them.

  Attributes:
    spec: the knobs.
    context_probs: float64 [K], Zipf frequencies p_k, in rank order (rank 1 first).
    codes: int [K, M], marker digits of each context as token ids in [1, B].
    supports: int [K, L, m], token ids of the support of each (context, slot), most likely first.
    weights: float64 [m], the weights w_j shared by every slot.
  """

  def __init__(self, spec: SyntheticSpec):
    spec.validate()
    self.spec = spec
    k, m, length = spec.num_contexts, spec.support_size, spec.body_length
    base, digits = spec.marker_base, spec.marker_digits
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(_LANGUAGE_STREAM,)))

    ranks = np.arange(1, k + 1, dtype=np.float64)
    self.context_probs = ranks ** -spec.zipf_exponent
    self.context_probs /= self.context_probs.sum()

    # Random distinct codes, so marker digits carry no information about frequency rank.
    code_ids = rng.choice(base**digits, size=k, replace=False)
    powers = base ** np.arange(digits - 1, -1, -1)
    self.codes = (code_ids[:, None] // powers[None, :]) % base + 1
    self._code_to_context = np.full(base**digits, -1, dtype=np.int64)
    self._code_to_context[code_ids] = np.arange(k)
    self._powers = powers

    body = _sample_distinct(rng, k * length, m, spec.body_alphabet)
    self.supports = (body + 1 + base).reshape(k, length, m).astype(np.int32)
    w = np.arange(1, m + 1, dtype=np.float64) ** -spec.support_exponent
    self.weights = w / w.sum()
    self._context_cdf = np.cumsum(self.context_probs)
    self._weight_cdf = np.cumsum(self.weights)

  # ---------------------------------------------------------------- exact quantities (nats)

  @property
  def entropy_floor(self) -> float:
    """H_floor = -sum_j w_j log w_j: expected loss per scored target of the Bayes predictor."""
    return float(_entropy(self.weights))

  def _slot_mixtures(self, context_slice: slice) -> np.ndarray:
    """Unnormalised per-slot token distributions of the contexts in `context_slice`: [L, V]."""
    spec = self.spec
    sup = self.supports[context_slice]  # [k', L, m]
    mass = self.context_probs[context_slice][:, None, None] * self.weights[None, None, :]
    slot = np.broadcast_to(np.arange(spec.body_length)[None, :, None], sup.shape)
    flat = (slot * spec.vocab_size + sup).ravel()
    counts = np.bincount(flat, weights=np.broadcast_to(mass, sup.shape).ravel(),
                         minlength=spec.body_length * spec.vocab_size)
    return counts.reshape(spec.body_length, spec.vocab_size)

  @functools.cached_property
  def unigram_entropy(self) -> float:
    """Loss of the best context- and slot-blind predictor of body tokens: H(u), nats."""
    u = self._slot_mixtures(slice(None)).mean(axis=0)
    return float(_entropy(u))

  @functools.cached_property
  def context_entropy(self) -> float:
    """Entropy of the context distribution, nats per document (carried by the marker)."""
    return float(_entropy(self.context_probs))

  def quanta_loss(self, n: int) -> float:
    """Loss (nats per scored token) of a model that knows exactly the `n` most frequent contexts.

    For the unknown contexts it predicts slot t with their mixture u_t^{>n}, the best it can do
    without knowing which one it faces: L(n) = P(<=n) H_floor + P(>n) mean_t H(u_t^{>n}).
    """
    n = int(min(max(n, 0), self.spec.num_contexts))
    known = float(self.context_probs[:n].sum())
    if n == self.spec.num_contexts:
      return self.entropy_floor
    tail = self._slot_mixtures(slice(n, None))
    tail_mass = tail.sum(axis=1, keepdims=True)
    unknown = float(_entropy(tail / tail_mass).mean())
    return known * self.entropy_floor + (1.0 - known) * unknown

  def quanta_curve(self) -> dict[str, list]:
    """L(n) for n = 0, 1, 2, 4, ..., K (see `quanta_loss`)."""
    ns = [0] + [2**i for i in range(int(math.log2(self.spec.num_contexts)) + 1)]
    ns = sorted(set(ns + [self.spec.num_contexts]))
    return {"n": ns, "loss": [self.quanta_loss(n) for n in ns]}

  def summary(self) -> dict:
    """JSON-serialisable description: knobs, layout, the floor and reference losses (nats)."""
    spec = self.spec
    alpha = spec.zipf_exponent - 1.0
    out = {
        "spec": spec.active_knobs(),
        "entropy_floor": self.entropy_floor,
        "unigram_entropy": self.unigram_entropy,
        "context_entropy_per_document": self.context_entropy,
        "marker_base": spec.marker_base,
        "body_alphabet": spec.body_alphabet,
        "doc_length": spec.doc_length,
        "scored_tokens_per_document": spec.body_length,
        # Quantization model predictions (Michaud et al. 2023, sec. 3): L(N) - floor ~ N^-alpha
        # if the number of learned quanta grows linearly with parameters N, and
        # L(D) - floor ~ D^-(alpha / (alpha + 1)) if a quantum is learned once seen a fixed
        # number of times.
        "predicted_alpha_params": alpha,
        "predicted_alpha_data": alpha / (alpha + 1.0),
        "quanta_curve": self.quanta_curve(),
        "floor_formula": "H_floor = -sum_j w_j log w_j, w_j = (j+1)^-beta / sum_i (i+1)^-beta",
    }
    if spec.task_list:  # only then: a language without tasks describes itself as before
      out["tasks"] = self.task_summary()
    return out

  # ---------------------------------------------------------------- tasks (module docstring)

  def task_names(self) -> tuple[str, ...]:
    """The scored task names: `recall`, `addition1` .. `addition<K>` (those enabled)."""
    spec = self.spec
    names = ("recall",) if "recall" in spec.task_list else ()
    if spec.addition:
      names += tuple(f"addition{k}" for k in range(1, spec.addition_digits + 1))
    return names

  def bayes_scores(self) -> dict[str, dict]:
    """Exact scores of the generating process on every enabled task, per task name:
    `{nll (nats per answer token), token_accuracy, exact_match, answer_tokens}`."""
    out = {}
    for name in self.task_names():
      if name == "recall":
        # Each answer token is the slot's mode, which the process gives probability w_0, and
        # (support_exponent > 0) the unique argmax: every token and every answer is right.
        out[name] = {"nll": float(-np.log(self.weights[0])), "token_accuracy": 1.0,
                     "exact_match": 1.0, "answer_tokens": self.spec.body_length}
      else:  # the sum is a function of the visible prompt
        k = int(name.removeprefix("addition"))
        out[name] = {"nll": 0.0, "token_accuracy": 1.0, "exact_match": 1.0,
                     "answer_tokens": k + 1}
    return out

  @functools.cached_property
  def recall_context_blind(self) -> dict[str, float]:
    """Exact recall scores of a predictor that ignores the marker: slot t's mixture u_t over
    all contexts (its argmax, lowest id on a tie, for accuracy). Averaged over all contexts
    alike, as `recall_examples` asks them."""
    spec = self.spec
    u = self._slot_mixtures(slice(None))  # [L, V]: sum_k p_k sum_j w_j [S(k,t)_j = x]
    mode = self.supports[:, :, 0]  # [K, L]
    slots = np.arange(spec.body_length)[None, :]
    nll = -np.log(u[slots, mode])  # u sums to 1 per slot
    hit = u.argmax(axis=1)[None, :] == mode
    return {"nll": float(nll.mean()), "token_accuracy": float(hit.mean()),
            "exact_match": float(hit.all(axis=1).mean())}

  def train_entropy_floor(self) -> float:
    """Expected loss per scored target of the train mask (language bodies and addition sums),
    in nats: a ratio of expectations over i.i.d. documents, (1 - q) L H / ((1 - q) L +
    q E[k + 1]), since the sums cost the Bayes predictor nothing."""
    spec = self.spec
    q = spec.addition_fraction if spec.addition else 0.0
    body = (1.0 - q) * spec.body_length
    sums = q * ((spec.addition_digits + 1) / 2.0 + 1.0)  # k uniform on 1..K
    return body * self.entropy_floor / (body + sums)

  def task_summary(self) -> dict:
    """The metadata block of the enabled tasks: names, Bayes scores, layout."""
    spec = self.spec
    out = {"names": list(self.task_names()), "bayes": self.bayes_scores()}
    if "recall" in spec.task_list:
      out["recall_context_blind"] = self.recall_context_blind
    if spec.addition:
      base = spec.addition_base
      out["addition"] = {"fraction": spec.addition_fraction, "digits": spec.addition_digits,
                         "digit_ids": [base, base + 9], "plus_id": base + PLUS,
                         "equals_id": base + EQUALS, "pad_id": base + PAD,
                         "digit_order": "least significant first"}
      out["train_entropy_floor"] = self.train_entropy_floor()
    return out

  def recall_examples(self, n: int) -> TaskExamples:
    """min(n, K) recall problems, distinct contexts in the task's fixed random order (the same
    for every run of this language): `[BOS, code(k), mode body]`, the answer the body."""
    spec = self.spec
    rng = np.random.default_rng(np.random.SeedSequence(
        spec.seed, spawn_key=(_TASK_STREAMS["recall"],)))
    ctx = rng.permutation(spec.num_contexts)[:n]
    n = ctx.size
    tokens = np.empty((n, spec.doc_length), np.int32)
    tokens[:, 0] = BOS
    tokens[:, 1:1 + spec.marker_digits] = self.codes[ctx]
    tokens[:, 1 + spec.marker_digits:] = self.supports[ctx, :, 0]
    answer = np.zeros((n, spec.doc_length - 1), np.float32)
    answer[:, spec.marker_digits:] = 1.0  # target i is token i + 1: the L body tokens
    return TaskExamples("recall", tokens, answer, spec.body_length)

  def addition_examples(self, k: int, n: int) -> TaskExamples:
    """`n` k-digit addition problems from the task's fixed stream (one per k), as documents."""
    spec = self.spec
    if not spec.addition or not 1 <= k <= spec.addition_digits:
      raise ScalingError(f"task addition{k} needs data.synthetic.tasks to include 'addition' "
                         f"and 1 <= {k} <= data.synthetic.addition_digits")
    rng = np.random.default_rng(np.random.SeedSequence(
        spec.seed, spawn_key=(_TASK_STREAMS["addition"], k)))
    a, b = rng.integers(0, 10**k, size=(2, n))
    tokens = addition_documents(spec, np.full(n, k), a, b)
    answer = np.zeros((n, spec.doc_length - 1), np.float32)
    answer[:, 2 * k + 2:3 * k + 3] = 1.0  # tokens 2k+3 .. 3k+3: the sum's k + 1 digits
    return TaskExamples(f"addition{k}", tokens, answer, k + 1)

  def task_examples(self, name: str, n: int) -> TaskExamples:
    """The evaluation set of task `name` (`task_names()`), `n` problems."""
    if name == "recall":
      return self.recall_examples(n)
    if name.startswith("addition") and name.removeprefix("addition").isdigit():
      return self.addition_examples(int(name.removeprefix("addition")), n)
    raise ScalingError(f"unknown synthetic task {name!r}; this language has "
                       f"{', '.join(self.task_names()) or 'no tasks (data.synthetic.tasks)'}")

  # ---------------------------------------------------------------- sampling

  def sample_documents(self, rng: np.random.Generator, num_docs: int) -> np.ndarray:
    """i.i.d. documents: int32 [num_docs, doc_length] (BOS, marker digits, body tokens)."""
    spec = self.spec
    u = rng.random(num_docs)
    ctx = np.minimum(np.searchsorted(self._context_cdf, u, side="right"), spec.num_contexts - 1)
    v = rng.random((num_docs, spec.body_length))
    j = np.minimum(np.searchsorted(self._weight_cdf, v, side="right"), spec.support_size - 1)
    body = self.supports[ctx[:, None], np.arange(spec.body_length)[None, :], j]
    docs = np.empty((num_docs, spec.doc_length), dtype=np.int32)
    docs[:, 0] = BOS
    docs[:, 1:1 + spec.marker_digits] = self.codes[ctx]
    docs[:, 1 + spec.marker_digits:] = body
    if spec.addition:  # drawn after the language's draws: without addition nothing changes
      is_sum = rng.random(num_docs) < spec.addition_fraction
      m = int(is_sum.sum())
      k = rng.integers(1, spec.addition_digits + 1, size=m)
      a = rng.integers(0, 10**k)
      b = rng.integers(0, 10**k)
      docs[is_sum] = addition_documents(spec, k, a, b)
    return docs

  def split_num_docs(self, split: str) -> int:
    tokens = self.spec.train_tokens if split == "train" else self.spec.validation_tokens
    return -(-tokens // self.spec.doc_length)

  def record_rng(self, split: str, record: int) -> np.random.Generator:
    """The generator of one stored record: a pure function of (seed, split, record index)."""
    key = (_SPLIT_STREAMS[split], record)
    return np.random.default_rng(np.random.SeedSequence(self.spec.seed, spawn_key=key))

  def generate_split(self, split: str):
    """Yields (record index, int32 [docs * doc_length]) for the stored records of `split`."""
    num_docs = self.split_num_docs(split)
    for r, start in enumerate(range(0, num_docs, DOCS_PER_RECORD)):
      n = min(DOCS_PER_RECORD, num_docs - start)
      yield r, self.sample_documents(self.record_rng(split, r), n).reshape(-1)

  # ---------------------------------------------------------------- the oracle

  def oracle_log_probs(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities the generating process assigns to each next token of `window`.

    Args:
      window: int [..., T + 1] tokens; targets are window[..., 1:].

    Returns:
      (log_probs float64 [..., T] in nats, zero where mask is 0; mask float32 [..., T]).
    """
    spec = self.spec
    window = np.asarray(window)
    mask = window_mask(window, spec, "validation")
    t_len = window.shape[-1] - 1
    pos = np.arange(1, t_len + 1)
    last_bos = last_bos_index(window)[..., 1:]
    safe_bos = np.maximum(last_bos, 0)
    # Decode the context from the marker digits after the last BOS (garbage where unscored).
    code = np.zeros(mask.shape, dtype=np.int64)
    for d in range(spec.marker_digits):
      tok = np.take_along_axis(window, np.minimum(safe_bos + 1 + d, t_len), axis=-1)
      code = code * spec.marker_base + np.clip(tok - 1, 0, spec.marker_base - 1)
    ctx = self._code_to_context[code]
    slot = np.clip(pos - safe_bos - 1 - spec.marker_digits, 0, spec.body_length - 1)
    sup = self.supports[np.maximum(ctx, 0), slot]  # [..., T, m]
    hit = sup == window[..., 1:, None]
    logw = np.log(self.weights)
    logp = np.where(hit, logw, 0.0).sum(axis=-1)
    valid = hit.any(axis=-1)
    scored = mask > 0
    if np.any(scored & ~valid):
      raise ValueError("window is not a sample of this language (a scored token is off-support)")
    return np.where(scored, logp, 0.0), mask


def last_bos_index(window: np.ndarray) -> np.ndarray:
  """For each position i of `window` [..., T], the index of the last BOS at or before i, else -1."""
  idx = np.arange(window.shape[-1])
  marked = np.where(window == BOS, idx, -1)
  return np.maximum.accumulate(marked, axis=-1)


def target_mask(window: np.ndarray, marker_digits: int) -> np.ndarray:
  """Scored targets of a window: float32 [..., T] for `window` int [..., T + 1].

  Target i (token window[..., i + 1]) is scored when the last BOS at or before it is inside the
  window and the target lies after that document's marker digits, i.e. it is a body token whose
  context code is visible.
  """
  last = last_bos_index(window)[..., 1:]
  pos = np.arange(1, window.shape[-1])
  return ((last >= 0) & (pos - last > marker_digits)).astype(np.float32)


def _digits(x: np.ndarray, k: int) -> np.ndarray:
  """[n] integers -> [n, k] decimal digits, least significant first."""
  return (np.asarray(x, np.int64)[:, None] // 10 ** np.arange(k, dtype=np.int64)) % 10


def addition_documents(spec: SyntheticSpec, k: np.ndarray, a: np.ndarray,
                       b: np.ndarray) -> np.ndarray:
  """Addition documents (module docstring): int32 [n, doc_length] for k-digit operands a, b.

  `[BOS, a (k digits), +, b (k digits), =, a + b (k + 1 digits), PAD ...]`, every number least
  significant digit first, in the ids from `spec.addition_base`.
  """
  base, k = spec.addition_base, np.asarray(k, np.int64)
  docs = np.full((k.size, spec.doc_length), base + PAD, np.int32)
  docs[:, 0] = BOS
  a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
  for width in np.unique(k):
    rows = np.flatnonzero(k == width)
    w = int(width)
    docs[rows, 1:1 + w] = base + _digits(a[rows], w)
    docs[rows, 1 + w] = base + PLUS
    docs[rows, 2 + w:2 + 2 * w] = base + _digits(b[rows], w)
    docs[rows, 2 + 2 * w] = base + EQUALS
    docs[rows, 3 + 2 * w:4 + 3 * w] = base + _digits(a[rows] + b[rows], w + 1)
  return docs


def window_mask(window: np.ndarray, spec: SyntheticSpec, split: str = "validation") -> np.ndarray:
  """Scored targets of a window of this language: float32 [..., T] for `window` int [..., T + 1].

  Language documents: `target_mask` (body tokens whose marker is visible). With addition on,
  addition documents are never scored in the validation split (its loss keeps the exact floor)
  and their sum digits are scored in the train split (what teaches addition); a document is an
  addition problem when the token after its BOS is an addition digit. Without addition this is
  `target_mask` itself.
  """
  mask = target_mask(window, spec.marker_digits)
  if not spec.addition:
    return mask
  window = np.asarray(window)
  last = last_bos_index(window)  # [..., T + 1]
  t_len = window.shape[-1] - 1
  first = np.take_along_axis(window, np.clip(last + 1, 0, t_len), axis=-1)[..., 1:]
  is_sum_doc = (last[..., 1:] >= 0) & (first >= spec.addition_base)
  mask = np.where(is_sum_doc, 0.0, mask).astype(np.float32)
  if split != "train":
    return mask
  idx = np.arange(window.shape[-1])
  last_eq = np.maximum.accumulate(np.where(window == spec.addition_base + EQUALS, idx, -1),
                                  axis=-1)[..., 1:]
  target = window[..., 1:]
  digit = (target >= spec.addition_base) & (target < spec.addition_base + PLUS)
  in_sum = is_sum_doc & (last_eq > last[..., 1:]) & digit
  return np.where(in_sum, 1.0, mask).astype(np.float32)
