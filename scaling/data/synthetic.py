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

  @property
  def marker_base(self) -> int:
    """Digits per marker position, B = ceil(K^(1/M)), computed without float rounding."""
    base = max(2, math.ceil(self.num_contexts ** (1.0 / self.marker_digits)) - 1)
    while base ** self.marker_digits < self.num_contexts:
      base += 1
    return base

  @property
  def body_alphabet(self) -> int:
    """Number of body token ids, A = vocab_size - 1 - B."""
    return self.vocab_size - 1 - self.marker_base

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
          f"and {self.marker_base} marker digits (num_contexts={self.num_contexts}, "
          f"marker_digits={self.marker_digits}); need at least 2*support_size="
          f"{2 * self.support_size}: raise {f}vocab_size or {f}marker_digits, or lower "
          f"{f}num_contexts")
    if not 0 <= self.seed < 2**63:
      raise ScalingError(f"{f}seed={self.seed} must be a non-negative integer")

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  def fingerprint(self) -> str:
    """A short hash of every knob that changes the generated data (names the prepared folder)."""
    payload = json.dumps({**self.to_json(), "docs_per_record": DOCS_PER_RECORD}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:10]


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
    return {
        "spec": spec.to_json(),
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
    mask = target_mask(window, spec.marker_digits)
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
