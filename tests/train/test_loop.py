"""The training loop end to end: run record, metrics, meshes, resume, failures."""

import json

import jax
import numpy as np
import pytest

from scaling.errors import ScalingError
from scaling.train.loop import train
from tests.train.test_noise_scale import assert_noise_logged


def _metrics(workdir):
  return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def _curve(workdir):
  return [(x["step"], x["loss"], x.get("eval_loss")) for x in _metrics(workdir)]


@pytest.mark.slow
def test_train_writes_run_record(tiny_cfg, tmp_path):
  result = train(tiny_cfg, tmp_path)
  record = json.loads((tmp_path / "result.json").read_text())
  assert record == json.loads(json.dumps(result, default=str))
  for key in ("run_id", "config", "params_non_embedding", "params_total", "params_active",
              "tokens", "flops", "flops_method", "final_eval_loss", "best_eval_loss",
              "entropy_floor", "metrics_path", "wall_time_s", "hardware", "mesh", "versions",
              "status"):
    assert key in record, key
  assert record["status"] == "complete"
  assert record["tokens"] == 12 * 8 * 64
  assert record["flops"] == pytest.approx(
      record["flops_by_method"]["chinchilla"])
  assert 0 < record["entropy_floor"] < record["final_eval_loss"]
  lines = _metrics(tmp_path)
  assert [x["step"] for x in lines] == [2, 4, 6, 8, 10, 12]
  assert lines[-1]["loss"] < lines[0]["loss"]  # it learns
  assert lines[-1]["tokens"] == record["tokens"]
  assert any((tmp_path / "tb").iterdir())
  assert (tmp_path / "config.json").exists()
  # Running again on a complete workdir does nothing and returns the same record.
  assert train(tiny_cfg, tmp_path)["wall_time_s"] == record["wall_time_s"]


@pytest.mark.slow
def test_same_loss_on_every_mesh(tiny_cfg, tmp_path):
  curves = {}
  for shape in [(8, 1, 1), (2, 4, 1), (4, 1, 2), (1, 1, 1)]:
    cfg = tiny_cfg.copy_and_resolve_references()
    # tiny_cfg's steps and schedule: on (8, 1, 1) this is test_train_writes_run_record's run,
    # whose compiled programs the persistent cache (make test) already holds.
    cfg.train.update(checkpoint_every=100)
    cfg.mesh.update(data=shape[0], model=shape[1], expert=shape[2])
    devices = jax.devices()[: int(np.prod(shape))]
    train(cfg, tmp_path / "x".join(map(str, shape)), devices=devices)
    curves[shape] = [x["loss"] for x in _metrics(tmp_path / "x".join(map(str, shape)))]
  reference = curves[(1, 1, 1)]
  for shape, curve in curves.items():
    np.testing.assert_allclose(curve, reference, rtol=2e-4, err_msg=str(shape))


@pytest.mark.slow
def test_microbatches_match_full_batch(tiny_cfg, tmp_path):
  tiny_cfg.train.checkpoint_every = 100  # m1 is test_train_writes_run_record's run (cached)
  train(tiny_cfg, tmp_path / "m1")
  tiny_cfg.train.microbatches = 2
  tiny_cfg.mesh.data = 4  # 8 sequences / 2 microbatches over 4 data shards
  record = train(tiny_cfg, tmp_path / "m2", devices=jax.devices()[:4])
  a = [x["loss"] for x in _metrics(tmp_path / "m1")]
  b = [x["loss"] for x in _metrics(tmp_path / "m2")]
  np.testing.assert_allclose(a, b, rtol=2e-4)
  # Two micro-batches give the gradient noise scale (issue 16); one does not.
  assert_noise_logged(tmp_path / "m2", record, window=tiny_cfg.train.eval_every)
  assert all("grad_noise_scale" not in x for x in _metrics(tmp_path / "m1"))


def test_corrupt_latest_checkpoint_falls_back(tiny_cfg, tmp_path, caplog):
  reference = tmp_path / "reference"
  train(tiny_cfg, reference)
  run = tmp_path / "run"
  tiny_cfg.train.keep_checkpoints = 3
  stopped = tiny_cfg.copy_and_resolve_references()
  train(stopped, run)
  # Pretend the run stopped after step 8 and its latest checkpoint (8) is damaged.
  (run / "result.json").unlink()
  import shutil
  shutil.rmtree(run / "checkpoints" / "12")
  for f in (run / "checkpoints" / "8").rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "state" in str(f):
      f.write_bytes(b"garbage")
  with caplog.at_level("WARNING"):
    result = train(tiny_cfg, run)
  assert "could not be restored" in caplog.text
  assert result["status"] == "complete"
  # Bitwise the same numbers as a run that was never interrupted.
  assert _curve(run) == _curve(reference)


def test_nan_loss_stops_with_clear_message(tiny_cfg, tmp_path):
  import jax.numpy as jnp

  def poison(model, batch):
    return {"poison": jnp.float32(np.nan)}

  from scaling.train import loop

  with pytest.raises(ScalingError, match=r"loss became nan by step 2.*last good checkpoint"):
    loop.train(tiny_cfg, tmp_path, aux_loss_fn=poison)
  record = json.loads((tmp_path / "result.json").read_text())
  assert record["status"] == "failed" and "Lower train.lr" in record["error"]
  assert not (tmp_path / "checkpoints").exists() or not any(
      p.name.isdigit() for p in (tmp_path / "checkpoints").iterdir())


@pytest.mark.parametrize("change,message", [
    (dict(train=dict(global_batch=12)), r"train.global_batch=12 does not split over 8"),
    (dict(mesh=dict(data=3)), r"mesh data:3,model:1,expert:1 has 3 devices but 8"),
    (dict(model=dict(vocab_size=100)), r"dataset has 256 tokens but model.vocab_size=100"),
    (dict(data=dict(name="no_such_dataset_xyz")), r"no_such_dataset_xyz"),
])
def test_config_errors_before_compiling(tiny_cfg, tmp_path, change, message):
  for section, fields in change.items():
    tiny_cfg[section].update(fields)
  with pytest.raises(ScalingError, match=message):
    train(tiny_cfg, tmp_path)
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_moe_trains_with_expert_parallelism_and_logs_router_stats(tiny_cfg, tmp_path):
  tiny_cfg.model.moe.update(num_experts=4, top_k=2, expert_d_ff=32)
  tiny_cfg.mesh.update(data=4, model=1, expert=2)
  tiny_cfg.train.update(steps=6, eval_every=6, checkpoint_every=100)
  record = train(tiny_cfg, tmp_path)
  assert record["experts"] == 4
  assert record["params_active"] < record["params_total"]
  line = _metrics(tmp_path)[-1]
  assert len(line["moe/expert_fraction"]) == 2 and len(line["moe/expert_fraction"][0]) == 4
  assert line["load_balance"] == pytest.approx(0.01 * sum(line["moe/load_balance"]), rel=1e-4)
  assert 0.0 <= min(line["moe/dropped_fraction"]) <= max(line["moe/dropped_fraction"]) < 1.0
  assert line["loss"] < _metrics(tmp_path)[0]["loss"]


@pytest.mark.slow(seconds=25)
def test_schedule_is_an_input_of_the_compiled_step(tiny_cfg):
  """Runs of one shape compile one train step whatever their schedule (peak, length, warm-up,
  kind) and cadences: the rate is an argument, so a ladder's rungs and branches share the
  persistent compilation cache, and a worker's `Programs` may key them without those fields
  (`scaling.train.programs.RUN_ONLY`: all of them are changed at once here). The rate passed is
  the schedule's own value at the state's step."""
  from scaling.parallel.mesh import make_mesh
  from scaling.train.loop import build_trainer
  from scaling.train.optimizer import schedule
  from scaling.train.programs import RUN_ONLY

  def lowered(**train):
    cfg = tiny_cfg.copy_and_resolve_references()
    cfg.train.update(train)
    trainer = build_trainer(cfg, make_mesh(cfg.mesh))
    batch = {k: jax.ShapeDtypeStruct((8, 64), dt, sharding=trainer.batch_sharding)
             for k, dt in (("inputs", np.int32), ("targets", np.int32), ("mask", np.float32))}
    lr = jax.ShapeDtypeStruct((), np.float32, sharding=trainer.replicated)
    return (trainer.step_program.lower(trainer.state, batch, lr).as_text(),
            trainer.eval_step.lower(trainer.state["params"], batch).as_text())

  base = lowered()
  run_only = dict(steps=40, lr=3e-3, min_lr_ratio=0.5, warmup_steps=5, schedule="wsd",
                  decay_fraction=0.5, decay_shape="1-sqrt", log_every=3, eval_every=7,
                  eval_batches=3, checkpoint_every=5, keep_checkpoints=1, flops_method="6N",
                  hparam_rule="deepseek", hardware="cpu")
  assert set(run_only) == RUN_ONLY
  assert lowered(**run_only) == base
  assert lowered(weight_decay=0.0)[0] != base[0]  # a hyperparameter still baked in is seen
  # Adafactor scales its decay by the peak rate inside the step: there `lr` is keyed.
  assert lowered(optimizer="adafactor")[0] != lowered(optimizer="adafactor", lr=3e-3)[0]
  rate = schedule(tiny_cfg.train)
  assert float(rate(0)) == 0.0 and float(rate(2)) == pytest.approx(1e-2)


def test_runs_of_one_shape_reuse_their_programs_bitwise(tiny_cfg, tmp_path):
  """A process that trains run after run (a ladder worker) keeps their jitted programs in a
  `Programs`: a second run of the shape, with another schedule, reuses them (no new trace) and
  ends bitwise where it ends when it builds its own."""
  from scaling.train.programs import Programs, program_key

  programs = Programs()
  train(tiny_cfg, tmp_path / "first", programs=programs)
  assert (programs.hits, programs.misses) == (0, 2)  # the initialisers and the steps
  second = tiny_cfg.copy_and_resolve_references()
  second.train.update(steps=8, lr=3e-3, schedule="wsd", warmup_steps=1)
  reused = train(second, tmp_path / "reused", programs=programs)
  assert (programs.hits, programs.misses) == (2, 2)
  alone = train(second, tmp_path / "alone")
  assert reused["final_eval_loss"] == alone["final_eval_loss"]
  def numbers(run: str) -> list[dict]:  # every metric line, less its clock readings
    return [{k: v for k, v in line.items() if k not in ("tokens_per_s", "step_time_s",
                                                          "elapsed_s")}
            for line in _metrics(tmp_path / run)]

  assert numbers("reused") == numbers("alone") and len(numbers("alone")) == 4
  # Another shape is another key.
  from scaling.parallel.mesh import make_mesh

  mesh = make_mesh(tiny_cfg.mesh)
  wider = tiny_cfg.copy_and_resolve_references()
  wider.model.d_ff = 128
  assert program_key(wider, mesh, None, None) != program_key(tiny_cfg, mesh, None, None)


def test_held_out_batches_are_kept_when_small_and_streamed_otherwise(tiny_cfg, monkeypatch):
  """A run evaluates the same held-out batches each time: kept on the device up to
  `EVAL_KEEP_BYTES` (sized before any is placed), else placed again batch by batch, with the
  same loss either way."""
  from scaling.parallel.mesh import make_mesh
  from scaling.train import loop

  trainer = loop.build_trainer(tiny_cfg, make_mesh(tiny_cfg.mesh))
  params = trainer.state["params"]
  kept = loop.Inputs(tiny_cfg, trainer)
  loss = kept.evaluate(params)
  assert len(kept._eval_on_device) == tiny_cfg.train.eval_batches
  assert kept.evaluate(params) == loss
  events = []
  monkeypatch.setattr(loop, "EVAL_KEEP_BYTES", 0)
  streamed = loop.Inputs(tiny_cfg, trainer)
  to_device, eval_step = streamed.to_device, trainer.eval_step
  monkeypatch.setattr(streamed, "to_device", lambda b: events.append("place") or to_device(b))
  monkeypatch.setattr(trainer, "eval_step", lambda p, b: events.append("eval") or eval_step(p, b))
  assert streamed.evaluate(params) == loss and streamed.evaluate(params) == loss
  assert streamed._eval_on_device is None
  # Each batch is placed just before its evaluation, never the whole set at once.
  assert events == ["place", "eval"] * (2 * tiny_cfg.train.eval_batches)


def test_cpu_steps_compile_with_the_projects_xla_options(tiny_cfg, monkeypatch):
  """On the CPU the train and eval steps compile with `scaling.xla_options.STEPS`: no dot goes
  to YNNPACK, XLA's default and the slower one at these shapes (the module's measurements). If
  a later XLA stops sending dots to YNNPACK by default, the second half fails: the option and
  its measurements are then to be revisited."""
  from scaling import xla_options
  from scaling.parallel.mesh import make_mesh
  from scaling.train.loop import build_trainer

  def compiled() -> list[str]:
    trainer = build_trainer(tiny_cfg, make_mesh(tiny_cfg.mesh))
    batch = {k: jax.ShapeDtypeStruct((8, 64), dt, sharding=trainer.batch_sharding)
             for k, dt in (("inputs", np.int32), ("targets", np.int32), ("mask", np.float32))}
    lr = jax.ShapeDtypeStruct((), np.float32, sharding=trainer.replicated)
    return [trainer.step_program.lower(trainer.state, batch, lr).compile().as_text(),
            trainer.eval_step.lower(trainer.state["params"], batch).compile().as_text()]

  assert jax.default_backend() == "cpu"
  assert not any("ynn_fusion" in text for text in compiled())
  monkeypatch.setitem(xla_options.STEPS, "cpu", {})  # XLA's defaults
  assert all("ynn_fusion" in text for text in compiled())
