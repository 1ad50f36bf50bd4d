"""`scaling train` end to end on every kind of data source, through the CLI (in-process).

Issue 12, defect 10: a text-folder run trained all its steps, then died writing `result.json`
(`dict() got multiple values for keyword argument 'vocab_size'`). Each source trains a few steps
of a one-layer model and must leave a complete run record; a rerun reports it. A TFDS catalogue
name that is not prepared, with downloads off, is one `error:` line and touches no network.
"""

import json

import pytest

from tests.data.test_text_folder import TEXTS
from tests.helpers import ROOT, run_cli

SMALL = {
    "model.num_layers": 1, "model.d_model": 32, "model.num_heads": 2, "model.num_kv_heads": 2,
    "model.d_ff": 64, "model.vocab_size": 512, "model.max_len": 32, "model.dtype": "float32",
    "train.steps": 3, "train.global_batch": 8, "train.seq_len": 32, "train.warmup_steps": 1,
    "train.log_every": 3, "train.eval_every": 3, "train.eval_batches": 1,
    "train.checkpoint_every": 100,
}


def _train(capfd, workdir, **fields) -> tuple[int, str]:
  """`scaling train` on the tiny preset with SMALL and `fields` (dots as `__`); (status, err)."""
  flags = {**SMALL, **{k.replace("__", "."): v for k, v in fields.items()}}
  argv = ["train", f"--config={ROOT / 'configs/dense.py'}:tiny", f"--workdir={workdir}"]
  argv += [f"--config.{k}={v}" for k, v in flags.items()]
  return run_cli(capfd, argv)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("corpus")
  for name, text in TEXTS.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
  return root


# Synthetic data through `scaling train` is covered by tests/train/test_identity.py and
# tests/ladder; the text sources had no end-to-end test before.
@pytest.mark.slow
@pytest.mark.parametrize("source", ["text_bytes", "text_sentencepiece"])
def test_train_on_each_source_writes_a_complete_record(source, corpus, data_dir, tmp_path,
                                                       capfd):
  fields = {"data__data_dir": data_dir, "data__name": "text_folder",
            "data__text_folder__path": str(corpus)}
  if source == "text_sentencepiece":
    # Sub-word tokens: fewer tokens than bytes, so shorter windows to fill a batch.
    fields.update(data__text_folder__tokenizer="sentencepiece",
                  data__text_folder__sp_vocab_size=400, train__seq_len=16)
  code, err = _train(capfd, tmp_path, **fields)
  assert code == 0, err
  record = json.loads((tmp_path / "result.json").read_text())
  assert record["status"] == "complete" and record["steps_done"] == 3
  assert record["final_eval_loss"] > 0
  data = record["data"]
  if source == "text_bytes":
    assert (data["name"], data["tokenizer"], data["vocab_size"]) == ("text_folder", "byte", 257)
  else:  # sentencepiece learns at most sp_vocab_size pieces from this small corpus
    assert (data["name"], data["tokenizer"]) == ("text_folder", "sentencepiece")
    assert 0 < data["vocab_size"] <= 400
  assert record["entropy_floor"] is None  # only the synthetic language has a known floor
  # A rerun finds the run complete and reports it (it used to crash the same way again).
  code, err = _train(capfd, tmp_path, **fields)
  assert code == 0, err
  assert json.loads((tmp_path / "result.json").read_text()) == record


def test_tfds_name_offline_is_one_line(data_dir, tmp_path, capfd):
  workdir = tmp_path / "run"
  # data.download=False: nothing may be fetched, so the run must fail at once, clearly.
  code, err = _train(capfd, workdir, data__name="lm1b", data__download=False,
                     data__data_dir=str(tmp_path / "tfds"))
  assert code == 2
  lines = [x for x in err.splitlines() if x.strip() and not x.startswith(("INFO", "WARNING"))]
  assert len(lines) == 1 and lines[0].startswith("error: data.name='lm1b' is not prepared"), err
  assert "data.download" in lines[0] and "Traceback" not in err
  assert not workdir.exists()
