"""evals.jsonl: idempotent appends that keep the file's text, its errors, and the results-table
columns it feeds; `ladder.eval` in a ladder's rungs."""

from __future__ import annotations

import json

import pytest

from scaling.errors import ScalingError
from scaling.evals import records
from scaling.ladder import results, spec
from tests.helpers import load_config


def _line(step, task, metric, value, n=10):
  return {"step": step, "tokens": step * 100, "task": task, "metric": metric, "value": value,
          "n": n}


def test_append_is_idempotent_and_keeps_the_text(tmp_path):
  first = [_line(5, "recall", "exact_match", 0.25), _line(5, "recall", "nll", 1.5),
           _line(5, "recall", "nll", 9.0)]  # the same key twice: the first wins
  assert records.append(tmp_path, first) == first[:2]
  text = (tmp_path / records.EVALS).read_text()
  assert records.append(tmp_path, first) == []  # a rerun adds nothing
  assert (tmp_path / records.EVALS).read_text() == text
  more = records.append(tmp_path, [_line(5, "recall", "nll", 2.0), _line(9, "recall", "nll",
                                                                            1.0)])
  assert more == [_line(9, "recall", "nll", 1.0)]
  assert (tmp_path / records.EVALS).read_text().startswith(text)
  assert records.at_step(records.read(tmp_path), 5) == {"recall/exact_match": 0.25,
                                                        "recall/nll": 1.5}
  assert records.final_columns(tmp_path, 9) == {"recall/nll": 1.0}
  assert records.final_columns(tmp_path, None) == {}
  assert list(json.loads(text.splitlines()[0])) == list(records.FIELDS)


def test_a_broken_file_is_named_and_never_rewritten(tmp_path, capsys):
  path = tmp_path / records.EVALS
  path.write_text(json.dumps(_line(1, "recall", "nll", 1.0)) + "\n{not json\n")
  with pytest.raises(ScalingError, match=r"evals.jsonl: line 2 is not an eval line"):
    records.append(tmp_path, [_line(2, "recall", "nll", 1.0)])
  assert path.read_text().endswith("{not json\n")
  assert records.final_columns(tmp_path, 1) == {}  # the table still lists the run
  assert "its eval columns are left empty" in capsys.readouterr().err


def test_results_table_gains_one_column_per_task_metric():
  rows = [{"run_id": "a", "recall/exact_match": 0.5, "validation/nll": 1.25}, {"run_id": "b"}]
  cols = results.columns(rows)
  assert cols[:len(results.COLUMNS)] == results.COLUMNS
  assert cols[len(results.COLUMNS):] == ("recall/exact_match", "validation/nll")
  csv = results.to_text(rows, "csv").splitlines()
  assert csv[0].endswith(",recall/exact_match,validation/nll")
  assert csv[1].endswith(",0.5,1.25") and csv[2].endswith(",,")
  assert json.loads(results.to_text(rows, "jsonl").splitlines()[0])["validation/nll"] == 1.25


def test_ladder_eval_labels_each_rung_and_keeps_its_checkpoints():
  lcfg = load_config("configs/ladders/cpu_emergence.py:smoke")
  rungs = spec.expand(lcfg)
  ids = [r.run_id for r in rungs]
  for r in rungs:
    ev, t = r.config.ladder.eval, r.config.train
    assert (ev.tasks, ev.checkpoints, ev.examples) == ("default", "all", 64)
    assert t.keep_checkpoints >= -(-t.steps // t.checkpoint_every)  # every checkpoint kept
  lcfg.ladder.eval.tasks = ""
  off = spec.expand(lcfg)
  assert [r.run_id for r in off] == ids  # evaluating is not part of a run's identity
  assert all("eval" not in r.config.ladder for r in off)
  lcfg.ladder.eval.update(tasks="default", checkpoints="some")
  with pytest.raises(ScalingError, match="ladder.eval.checkpoints='some'"):
    spec.expand(lcfg)
