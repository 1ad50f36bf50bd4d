"""The run record: one definition of result.json, old records still read, unknown keys kept."""

import dataclasses
import json

from scaling.ladder import results, store
from scaling.train import identity, record
from scaling.train.record import RunRecord

# A result.json as written before `schema_version` existed (trimmed: older writers also lacked
# `params_active_non_embedding`, `experts`, `data`, `config_identity`).
LEGACY = {"run_id": "old-run", "status": "complete",
          "config": {"model": {"name": "tiny", "moe": {"num_experts": 0}},
                     "ladder": {"budget": 1e15, "sweep": "iso"}},
          "params_non_embedding": 1000, "params_total": 3000, "params_active": 3000,
          "tokens": 20000, "flops": 1.2e8, "flops_method": "chinchilla",
          "final_eval_loss": 3.25, "best_eval_loss": 3.2, "steps": 10, "steps_done": 10,
          "wall_time_s": 12.5, "metrics_path": "metrics.jsonl"}


def test_legacy_record_reads_as_version_1():
  rec = RunRecord.from_json(LEGACY)
  assert rec.schema_version == record.LEGACY_SCHEMA_VERSION == 1
  assert (rec.run_id, rec.status, rec.final_eval_loss) == ("old-run", "complete", 3.25)
  assert rec.config_identity is None and rec.experts is None and rec.extra == {}
  out = rec.to_json()
  assert {k: out[k] for k in LEGACY} == LEGACY  # every value as written


def test_unknown_keys_round_trip_after_the_known_ones():
  # Keys a newer version (or a person) added: kept verbatim, in order, and written back.
  data = dict(RunRecord(run_id="b", status="complete").to_json(), from_version_9="trunk",
              extra=80, notes={"why": ["x", 1]})
  rec = RunRecord.from_json(json.loads(json.dumps(data)))
  assert rec.extra == {"from_version_9": "trunk", "extra": 80, "notes": {"why": ["x", 1]}}
  assert rec.to_json() == data and list(rec.to_json()) == list(data)
  assert RunRecord.from_json(rec.to_json()) == rec


def test_written_record_carries_its_schema_version(tmp_path):
  rec = RunRecord(run_id="r", status="failed", error="loss became nan by step 3")
  record.write_result(tmp_path, rec)
  on_disk = json.loads((tmp_path / record.RESULT).read_text())
  assert on_disk["schema_version"] == record.SCHEMA_VERSION == 2
  assert set(on_disk) == {f.name for f in dataclasses.fields(RunRecord)} - {"extra"}
  assert record.read_result(tmp_path) == rec


def test_read_result_is_none_without_a_record(tmp_path):
  assert record.read_result(tmp_path) is None
  (tmp_path / record.RESULT).write_text('{"status": "compl')  # torn by a foreign writer
  assert record.read_result(tmp_path) is None
  (tmp_path / record.RESULT).write_text("[1, 2]")  # JSON, but not a record
  assert record.read_result(tmp_path) is None


def test_every_reader_takes_a_legacy_workdir(tmp_path):
  # A user's workdir from before schema_version: collect, ladder status and the identity check
  # read it as they did.
  run = tmp_path / "runs" / "old-run"
  run.mkdir(parents=True)
  (run / record.RESULT).write_text(json.dumps(LEGACY))
  found = results.read_run_records(tmp_path)
  assert not found.unreadable and [f.name for f, _ in found.records] == ["old-run"]
  row = results.row(found.records[0][1], "old-run")
  assert (row["params"], row["tokens"], row["loss"], row["budget"], row["sweep"],
          row["experts"]) == (1000, 20000, 3.25, 1e15, "iso", 1)
  [collected] = results.gather(tmp_path).rows
  assert {k: collected[k] for k in row if k in results.COLUMNS} == {
      k: v for k, v in row.items() if k in results.COLUMNS}
  state = store.run_state(tmp_path, "old-run")
  assert (state["state"], state["steps_done"], state["eval_loss"], state["wall_time_s"],
          state["error"]) == ("complete", 10, 3.25, 12.5, None)
  # No identity.json and no config.json: the identity is the config inside result.json.
  assert identity.recorded(run) == identity.identity(LEGACY["config"])
