"""A ladder whose workdir is on Cloud Storage (`gs://`, the emulator in tests/fake_gcs.py):
runs land, reruns are no-ops, status and the results table read the bucket, fitting loads it."""

import uuid

import pytest

from scaling import cli, storage
from scaling.fit.table import load_table
from scaling.ladder import runner, store

pytestmark = pytest.mark.slow
TINY = "tests/ladder/tiny_ladder.py"


def test_ladder_in_a_bucket(gcs_bucket, data_dir, capsys):
  w = f"{gcs_bucket}/ladders/{uuid.uuid4().hex}"
  args = ["ladder", "run", TINY, f"--workdir={w}", "--parallel=2",
          f"--config.run.data.data_dir={data_dir}", "--config.ladder.sweeps.iso.depths=(1,2)"]
  assert cli.main(args) == 0  # two worker subprocesses, both writing to the bucket
  assert "[2/2 done]" in capsys.readouterr().out
  ids = [r["run_id"] for r in store.read_manifest(w)["runs"]]
  assert len(ids) == 2
  assert all(store.run_state(w, i)["state"] == "complete" for i in ids)
  assert all(len(runner.attempts(w, i)) == 1 for i in ids)
  assert all((storage.Path(w) / "runs" / i / "checkpoints").is_dir() for i in ids)
  assert all(not (storage.Path(w) / "runs" / i / store.LOCK).exists() for i in ids)

  assert cli.main(args) == 0
  assert "2 complete, 0 to run" in capsys.readouterr().out

  assert cli.main(["ladder", "status", w]) == 0
  assert capsys.readouterr().out.count(" complete ") == 2
  assert cli.main(["results", "collect", w, f"--out={w}/results.csv"]) == 0
  rows = (storage.Path(w) / "results.csv").read_text().splitlines()
  assert len(rows) == 3 and rows[0].startswith("run_id,params,tokens,loss")
  table = load_table(w)
  assert sorted(table.run_id) == sorted(ids) and all(table.loss > 0)
