"""The synthetic language: its tables, its exact floor, and the oracle that reaches it."""

from __future__ import annotations

import numpy as np
import pytest

from scaling.data import synthetic
from scaling.errors import ScalingError

TINY = synthetic.SyntheticSpec(vocab_size=64, num_contexts=100, body_length=13, train_tokens=16384,
                               validation_tokens=4096)


@pytest.fixture(scope="module")
def default_lang() -> synthetic.SyntheticLanguage:
  return synthetic.SyntheticLanguage(synthetic.SyntheticSpec())


def test_tables_are_well_formed():
  lang = synthetic.SyntheticLanguage(TINY)
  spec = TINY
  assert spec.marker_base == 10 and spec.doc_length == 16
  np.testing.assert_allclose(lang.context_probs.sum(), 1.0)
  assert np.all(np.diff(lang.context_probs) < 0)  # Rank order: Zipf frequencies decrease.
  assert len({tuple(c) for c in lang.codes}) == spec.num_contexts  # Codes identify contexts.
  assert lang.codes.min() >= 1 and lang.codes.max() <= spec.marker_base
  sup = lang.supports.reshape(-1, spec.support_size)
  assert sup.min() >= 1 + spec.marker_base and sup.max() < spec.vocab_size
  assert np.all(np.sort(sup, axis=1)[:, 1:] != np.sort(sup, axis=1)[:, :-1])  # Distinct.


def test_floor_is_the_entropy_of_the_slot_weights():
  lang = synthetic.SyntheticLanguage(TINY)
  w = np.arange(1, 5, dtype=float) ** -2.0
  w /= w.sum()
  assert lang.entropy_floor == pytest.approx(-(w * np.log(w)).sum(), abs=1e-12)
  # The same tables come back from the same seed; another seed gives another language.
  again = synthetic.SyntheticLanguage(TINY)
  np.testing.assert_array_equal(again.supports, lang.supports)
  other = synthetic.SyntheticLanguage(synthetic.SyntheticSpec(**{**TINY.to_json(), "seed": 1}))
  assert not np.array_equal(other.supports, lang.supports)


def test_target_mask_scores_body_tokens_with_visible_marker():
  # Two digits of marker: window = [b, b, BOS, d, d, x, x, BOS, d] (targets are window[1:]).
  w = np.array([70, 71, 0, 5, 6, 80, 81, 0, 7])
  mask = synthetic.target_mask(w, marker_digits=2)
  # Targets: 71 (no BOS yet), BOS, d, d, 80, 81, BOS, d.
  np.testing.assert_array_equal(mask, [0, 0, 0, 0, 1, 1, 0, 0])


def test_oracle_reaches_the_floor(default_lang):
  """Mean oracle loss on scored targets of generated windows = H_floor within 3 standard errors."""
  rng = np.random.default_rng(123)
  stream = default_lang.sample_documents(rng, 12_000).reshape(-1)[5:]  # Unaligned windows.
  t = 100
  n = (stream.size - 1) // t
  windows = np.stack([stream[i * t:i * t + t + 1] for i in range(n)])
  logp, mask = default_lang.oracle_log_probs(windows)
  losses = -logp[mask > 0]
  se = losses.std() / np.sqrt(losses.size)
  assert losses.size > 250_000
  assert abs(losses.mean() - default_lang.entropy_floor) < 3 * se, (losses.mean(), se)


def test_unigram_baseline_is_far_above_the_floor(default_lang):
  """A unigram model's measured loss matches the exact unigram entropy and is >> the floor."""
  lang = default_lang
  spec = lang.spec
  docs = lang.sample_documents(np.random.default_rng(7), 20_000)
  body = docs[:, 1 + spec.marker_digits:].reshape(-1)
  u = np.bincount(lang.supports.reshape(-1),
                  weights=np.broadcast_to(lang.context_probs[:, None, None] * lang.weights,
                                          lang.supports.shape).reshape(-1),
                  minlength=spec.vocab_size) / spec.body_length
  losses = -np.log(u[body])
  se = losses.std() / np.sqrt(losses.size)
  assert abs(losses.mean() - lang.unigram_entropy) < 3 * se
  assert lang.unigram_entropy > lang.entropy_floor + 3.0  # nats


def test_quanta_curve_falls_as_a_power_law(default_lang):
  curve = default_lang.quanta_curve()
  n, loss = np.array(curve["n"]), np.array(curve["loss"])
  assert np.all(np.diff(loss) < 0)
  assert loss[-1] == pytest.approx(default_lang.entropy_floor)
  # Excess loss ~ n^-(zipf_exponent - 1) = n^-0.5 (Michaud et al. 2023) away from both ends.
  sel = (n >= 8) & (n <= 256)
  slope = np.polyfit(np.log(n[sel]), np.log(loss[sel] - loss[-1]), 1)[0]
  assert -0.7 < slope < -0.4, slope


@pytest.mark.parametrize("change, field", [
    ({"vocab_size": 16}, "data.synthetic.vocab_size"),
    ({"zipf_exponent": 1.0}, "data.synthetic.zipf_exponent"),
    ({"num_contexts": 0}, "data.synthetic.num_contexts"),
])
def test_bad_knobs_name_the_field(change, field):
  with pytest.raises(ScalingError, match=field):
    synthetic.SyntheticLanguage(synthetic.SyntheticSpec(**{**TINY.to_json(), **change}))
