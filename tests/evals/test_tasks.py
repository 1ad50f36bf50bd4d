"""The synthetic language's tasks: exact answers, exact Bayes-optimal scores (computed from the
generating process through the same scoring code a model goes through), masks, and that a
language without tasks is the language it was before tasks existed."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.config import default_config
from scaling.data import make_batches, pipeline, synthetic
from scaling.errors import ScalingError
from scaling.evals import tasks
from scaling.train import identity

ON = synthetic.SyntheticSpec(vocab_size=48, num_contexts=30, body_length=14, support_size=3,
                             support_exponent=1.5, tasks="recall,addition",
                             addition_fraction=0.3, addition_digits=4, train_tokens=19_200,
                             validation_tokens=4_800)


@pytest.fixture(scope="module")
def lang() -> synthetic.SyntheticLanguage:
  return synthetic.SyntheticLanguage(ON)


def _decode(x: np.ndarray, base: int) -> int:
  """Digits (ids from `base`, least significant first) -> the integer."""
  return int(sum(int(d - base) * 10**i for i, d in enumerate(x)))


def test_addition_documents_hold_exact_sums(lang):
  base = ON.addition_base
  assert ON.body_alphabet == 48 - 1 - ON.marker_base - synthetic.ADDITION_IDS
  for k in range(1, 5):
    ex = lang.task_examples(f"addition{k}", 50)
    assert ex.tokens.shape == (50, ON.doc_length) and ex.answer_tokens == k + 1
    for row, ans in zip(ex.tokens, ex.answer, strict=True):
      assert row[0] == synthetic.BOS and row[k + 1] == base + synthetic.PLUS
      assert row[2 * k + 2] == base + synthetic.EQUALS
      assert np.all(row[3 * k + 4:] == base + synthetic.PAD)
      a, b = _decode(row[1:k + 1], base), _decode(row[k + 2:2 * k + 2], base)
      digits = row[1:][ans > 0]  # the answer targets are exactly the k + 1 sum digits
      assert digits.size == k + 1 and _decode(digits, base) == a + b
  # The evaluation set is fixed: the same problems for every run of the language.
  np.testing.assert_array_equal(lang.task_examples("addition3", 20).tokens,
                                synthetic.SyntheticLanguage(ON).task_examples("addition3",
                                                                              20).tokens)


def test_recall_asks_every_context_once_for_its_modal_body(lang):
  ex = lang.task_examples("recall", 1000)
  assert ex.tokens.shape[0] == ON.num_contexts  # distinct contexts, each once
  m = ON.marker_digits
  codes = [tuple(c) for c in ex.tokens[:, 1:1 + m]]
  assert len(set(codes)) == ON.num_contexts
  ctx = [next(i for i, c in enumerate(lang.codes) if tuple(c) == code) for code in codes]
  np.testing.assert_array_equal(ex.tokens[:, 1 + m:], lang.supports[ctx, :, 0])
  np.testing.assert_array_equal(ex.answer.sum(1), ON.body_length)


def _bayes_log_probs(lang, ex) -> np.ndarray:
  """The generating process's next-token distribution at every target of the problems:
  [n, T, V] log-probabilities (a "model" with the language's own tables)."""
  spec = lang.spec
  n, t = ex.tokens.shape[0], ex.tokens.shape[1] - 1
  logp = np.full((n, t, spec.vocab_size), -np.inf)
  m, base = spec.marker_digits, spec.addition_base
  for i, row in enumerate(ex.tokens):
    if ex.name == "recall":
      k = next(j for j, c in enumerate(lang.codes) if np.array_equal(c, row[1:1 + m]))
      for slot in range(spec.body_length):
        logp[i, m + slot, lang.supports[k, slot]] = np.log(lang.weights)
    else:  # the sum is a function of the prompt: probability 1 on its next digit
      for j in np.flatnonzero(ex.answer[i]):
        logp[i, j, row[j + 1]] = 0.0
    logp[i, ~np.isfinite(logp[i]).any(-1), base] = 0.0  # unscored positions: anything
  return logp


def test_bayes_scores_are_exact(lang):
  bayes = lang.bayes_scores()
  assert set(bayes) == {"recall", "addition1", "addition2", "addition3", "addition4"}
  assert bayes["recall"]["nll"] == pytest.approx(-np.log(lang.weights[0]), abs=1e-15)
  for name, want in bayes.items():
    ex = lang.task_examples(name, 64)
    got = tasks.score(*tasks.from_log_probs(_bayes_log_probs(lang, ex), ex.tokens[:, 1:]),
                      ex.answer)
    for metric in tasks.ANSWER_METRICS:
      assert got[metric] == pytest.approx(want[metric], abs=1e-12), (name, metric)
  # The metadata carries them, with the layout and the context-blind recall scores.
  meta = lang.summary()["tasks"]
  assert meta["bayes"] == bayes and meta["names"] == list(bayes)
  blind = meta["recall_context_blind"]
  assert blind["nll"] > bayes["recall"]["nll"] and blind["exact_match"] < 1


def test_context_blind_recall_is_exact(lang):
  """The blind predictor (slot mixtures, no marker) scored through the scoring code."""
  ex = lang.task_examples("recall", 1000)
  u = lang._slot_mixtures(slice(None))  # noqa: SLF001 - the definition under test
  logp = np.full(ex.tokens.shape[:1] + (ex.tokens.shape[1] - 1, ON.vocab_size), -50.0)
  with np.errstate(divide="ignore"):
    logp[:, ON.marker_digits:] = np.where(u > 0, np.log(u), -50.0)[None]
  got = tasks.score(*tasks.from_log_probs(logp, ex.tokens[:, 1:]), ex.answer)
  for metric, want in lang.recall_context_blind.items():
    assert got[metric] == pytest.approx(want, rel=1e-9), metric


def test_scores_three_ways():
  ans = np.array([[0, 1, 1, 1], [0, 1, 1, 1]], np.float32)
  logp = np.log(np.array([[0.1, 0.5, 0.5, 0.5], [0.9, 0.5, 0.25, 1.0]]))
  ok = np.array([[False, True, True, True], [True, True, False, True]])
  got = tasks.score(logp, ok, ans)
  assert got["exact_match"] == 0.5 and got["token_accuracy"] == pytest.approx(5 / 6)
  assert got["nll"] == pytest.approx(-np.log([0.5, 0.5, 0.5, 0.5, 0.25, 1.0]).mean())


def test_masks_train_the_sums_and_keep_the_floor(lang):
  docs = lang.sample_documents(np.random.default_rng(3), 400)
  is_sum = docs[:, 1] >= ON.addition_base
  assert 0.2 < is_sum.mean() < 0.4  # addition_fraction 0.3
  window = docs.reshape(-1)[:ON.doc_length * 40 + 1]
  train = synthetic.window_mask(window, ON, "train").reshape(-1)
  val = synthetic.window_mask(window, ON, "validation")
  lang_only = synthetic.target_mask(window, ON.marker_digits)
  targets = window[1:]
  digit = (targets >= ON.addition_base) & (targets < ON.addition_base + synthetic.PLUS)
  # Validation: language bodies only (the floor stays exact); train adds the sum digits.
  assert np.all(val <= lang_only) and not np.any(val[digit])
  extra = (train > 0) & (val == 0)
  assert extra.sum() == sum(k + 1 for k in _sum_lengths(docs[:40], ON))
  assert np.all(digit[extra])
  # The oracle reaches the floor on the validation mask (addition documents unscored).
  logp, mask = lang.oracle_log_probs(window[None])
  np.testing.assert_array_equal(mask[0], val)
  assert np.all(np.isin(np.round(-logp[mask > 0], 12), np.round(-np.log(lang.weights), 12)))


def _sum_lengths(docs: np.ndarray, spec) -> list[int]:
  out = []
  for d in docs:
    if d[1] >= spec.addition_base:
      out.append(int(np.flatnonzero(d == spec.addition_base + synthetic.PLUS)[0]) - 1)
  return out


def test_tasks_off_is_the_language_as_before():
  plain = synthetic.SyntheticSpec()
  # The folder name of the default language, as prepared before tasks existed.
  assert plain.fingerprint() == "b32a57de39"
  assert synthetic.SyntheticSpec(addition_fraction=0.5).fingerprint() == plain.fingerprint()
  assert synthetic.SyntheticSpec(tasks="recall").fingerprint() != plain.fingerprint()
  assert "tasks" not in synthetic.SyntheticLanguage(plain).summary()
  # Run identities of configs without tasks are unchanged; turning tasks on changes them.
  cfg = default_config()
  assert "tasks" not in identity.identity(cfg)["data"]["synthetic"]
  on = default_config()
  on.data.synthetic.tasks = "recall"
  assert identity.identity_hash(on) != identity.identity_hash(cfg)
  assert identity.differences(identity.identity(cfg), identity.identity(on)) == [
      "data.synthetic.tasks (unset) -> 'recall'"]


def test_recall_alone_leaves_the_language_data_and_floor_as_they_were():
  # Why the demo ladder can score recall without changing any figure it fits: the task needs no
  # documents of its own, so every token of both splits and the floor are the same.
  knobs = dict(vocab_size=64, num_contexts=256, zipf_exponent=2.5, body_length=4,
               train_tokens=40_000, validation_tokens=8_000)
  plain = synthetic.SyntheticLanguage(synthetic.SyntheticSpec(**knobs))
  recall = synthetic.SyntheticLanguage(synthetic.SyntheticSpec(tasks="recall", **knobs))
  assert recall.entropy_floor == plain.entropy_floor
  for split in ("train", "validation"):
    for (i, a), (j, b) in zip(plain.generate_split(split), recall.generate_split(split),
                              strict=True):
      assert i == j
      np.testing.assert_array_equal(a, b)


def test_train_split_scores_sums_through_the_pipeline(tmp_path):
  cfg = pipeline.default_config()
  cfg.data_dir = str(tmp_path)
  cfg.synthetic.update(ON.to_json())
  kw = dict(seq_len=ON.doc_length * 4, global_batch=4, seed=0)
  train, val = make_batches(cfg, split="train", **kw)[0], make_batches(cfg, split="validation",
                                                                       **kw)[0]
  for batch, split in ((train, "train"), (val, "validation")):
    window = np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)
    np.testing.assert_array_equal(batch["mask"], synthetic.window_mask(window, ON, split))
  meta = pipeline.data_info(cfg).metadata["tasks"]
  assert meta["train_entropy_floor"] < pipeline.data_info(cfg).entropy_floor


@pytest.mark.parametrize("change, field", [
    ({"tasks": "recall,sorting"}, "data.synthetic.tasks"),
    ({"tasks": "recall", "support_exponent": 0.0}, "data.synthetic.support_exponent"),
    ({"addition_digits": 5}, "data.synthetic.body_length"),
    ({"addition_fraction": 1.0}, "data.synthetic.addition_fraction"),
])
def test_bad_task_knobs_name_the_field(change, field):
  with pytest.raises(ScalingError, match=field):
    synthetic.SyntheticSpec(**{**ON.to_json(), **change}).validate()


def test_task_names_resolve(lang):
  assert tasks.resolve(None, lang) == ["validation", "recall", "addition1", "addition2",
                                       "addition3", "addition4"]
  assert tasks.resolve("addition,recall", lang)[0] == "addition1"
  assert tasks.resolve(None, None) == ["validation"]
  for bad, words in (("addition9", "no addition9 task"), ("sorting", "unknown task"),
                     ("recall", None)):
    if words is None:
      with pytest.raises(ScalingError, match="needs the synthetic language"):
        tasks.resolve(bad, None)
      continue
    with pytest.raises(ScalingError, match=words):
      tasks.resolve(bad, lang)
