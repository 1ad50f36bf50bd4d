"""Emergence on real checkpoints: the smoke emergence ladder (configs/ladders/cpu_emergence.py)
trained and evaluated by the local backend, then `scaling fit --law=emergence` on its evals;
`scaling eval` and the ladder add nothing on a rerun and redo only what is missing."""

from __future__ import annotations

import functools
import io
import json

import jax
import pytest

from scaling import cli
from scaling.evals import records
from scaling.evals import run as evals_run
from scaling.ladder import runner, spec, store
from scaling.train import loop
from scaling.train.checkpoint import saved_steps
from tests.helpers import load_config, run_cli_captured

SMOKE = "configs/ladders/cpu_emergence.py:smoke"
METRICS = {"validation": ("nll", "excess"), "recall": ("nll", "token_accuracy", "exact_match"),
           "addition1": ("nll", "token_accuracy", "exact_match"),
           "addition2": ("nll", "token_accuracy", "exact_match")}


@pytest.fixture
def one_device(monkeypatch):
  """The ladder's worker (`runner.work`) trains and evaluates on one CPU device: these models
  are too small to gain from the 8 simulated ones, which only add collectives."""
  one = jax.devices()[:1]
  monkeypatch.setattr(loop, "train", functools.partial(loop.train, devices=one))
  monkeypatch.setattr(evals_run, "evaluate", functools.partial(evals_run.evaluate, devices=one))


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
  w = tmp_path_factory.mktemp("emergence") / "ladder"
  lcfg = load_config(SMOKE)
  lcfg.run.data.data_dir = str(w.parent / "tfds")
  rungs = spec.expand(lcfg)
  with pytest.MonkeyPatch.context() as mp:
    one = jax.devices()[:1]
    mp.setattr(loop, "train", functools.partial(loop.train, devices=one))
    mp.setattr(evals_run, "evaluate", functools.partial(evals_run.evaluate, devices=one))
    todo = runner.prepare(w, "cpu_emergence", rungs)
    assert runner.run_local(w, rungs, todo, out=io.StringIO()) == 0
  return w, rungs


@pytest.mark.slow(seconds=40)  # its setup trains and scores the ladder (shared by the file)
def test_every_checkpoint_of_every_rung_is_scored(ladder, capfd):
  w, rungs = ladder
  for r in rungs:
    d = store.run_dir(w, r.run_id)
    lines = records.read(d)
    steps = saved_steps(d)
    assert len(steps) == 2  # rules.checkpoints, all kept for evaluation
    want = {(s, t, m) for s in steps for t, ms in METRICS.items() for m in ms}
    assert {records.key(x) for x in lines} == want
    final = records.at_step(lines, steps[-1])
    result = json.loads((d / "result.json").read_text())
    # The validation task is the loop's own evaluation: at the end, its final eval loss.
    assert final["validation/nll"] == result["final_eval_loss"]
    assert final["validation/excess"] == pytest.approx(
        result["final_eval_loss"] - result["entropy_floor"])
    assert result["data"]["tasks"]["bayes"]["recall"]["answer_tokens"] == 8
  code, out, _ = run_cli_captured(capfd, ["results", "collect", str(w)])
  header, *rows = out.splitlines()
  assert code == 0 and len(rows) == 3
  cols = header.split(",")
  assert cols[-11:] == sorted(f"{t}/{m}" for t, ms in METRICS.items() for m in ms)
  loss = [float(r.split(",")[cols.index("loss")]) for r in rows]
  assert [float(r.split(",")[cols.index("validation/nll")]) for r in rows] == loss


def test_exact_match_looks_emergent_nll_does_not(ladder, tmp_path, capfd):
  w, _ = ladder
  out = tmp_path / "emergence"
  code, stdout, err = run_cli_captured(
      capfd, ["fit", str(w), "--law=emergence", "--task=recall", f"--out={out}"])
  assert code == 0, err
  fit = json.loads((out / "fit.json").read_text())
  rep = fit["info"]["tasks"]["recall"]
  curve = rep["curve"]
  assert [c["flops"] for c in curve] == sorted(c["flops"] for c in curve) and len(curve) == 3
  # Smooth metrics improve over the whole ladder; exact match stays near 0 and then rises.
  assert curve[0]["nll"] > curve[1]["nll"] > curve[2]["nll"]
  assert curve[-1]["exact_match"] > 0.1 > curve[0]["exact_match"]
  span = {m: rep["span"][m]["span"] for m in ("nll", "token_accuracy", "exact_match")}
  assert span["exact_match"] < span["nll"]  # exact match rises over fewer decades of compute
  assert fit["derived"]["recall.sharpness_ratio"] == pytest.approx(
      span["nll"] / span["exact_match"]) and fit["derived"]["recall.sharpness_ratio"] > 1
  # p^k, k = 8 answer tokens, from the measured per-token accuracy.
  assert all(c["p_to_the_k"] == pytest.approx(c["token_accuracy"] ** 8) for c in curve)
  assert rep["bayes"]["nll"] < curve[-1]["nll"]  # the exact floor is below every model
  assert "Sharpness ratio" in (out / "report.md").read_text()
  assert (out / "plots" / "emergence.png").stat().st_size > 5000
  assert "recall.sharpness_ratio" in stdout
  # Every checkpoint as a point: more points, the same conclusion on this ladder.
  code, _, err = run_cli_captured(capfd, ["fit", str(w), "--law=emergence", "--task=recall",
                                          "--points=all", "--json"])
  assert code == 0, err


def test_reruns_add_nothing_and_missing_evals_are_redone(ladder, capfd, one_device):
  w, rungs = ladder
  d = store.run_dir(w, rungs[0].run_id)
  before = (d / records.EVALS).read_text()
  code, _, err = run_cli_captured(capfd, ["eval", str(d), "--checkpoints=all"])
  assert code == 0 and "0 lines added" in err
  assert (d / records.EVALS).read_text() == before
  assert runner.prepare(w, "cpu_emergence", rungs) == []  # nothing left to train or score
  # A lost line (say the evaluation was killed) is all a new `ladder run` computes.
  (d / records.EVALS).write_text("".join(before.splitlines(keepends=True)[:-1]))
  todo = runner.prepare(w, "cpu_emergence", rungs)
  assert [r.run_id for r in todo] == [rungs[0].run_id]
  assert runner.run_local(w, rungs, todo, out=io.StringIO()) == 0
  assert (d / records.EVALS).read_text() == before  # the same value, bit for bit
  assert len(runner.attempts(w, rungs[0].run_id)) == 1  # scored, not trained again


def test_eval_errors_are_one_line(tmp_path, capfd):
  code, _, err = run_cli_captured(capfd, ["eval", str(tmp_path / "nope")])
  assert code == 2 and err.startswith("error:") and "no such run folder" in err
  code, _, err = run_cli_captured(capfd, ["eval", str(tmp_path)])
  assert code == 2 and "has no config.json" in err
  assert cli.main(["eval", str(tmp_path), "--checkpoints=some"]) == 2
