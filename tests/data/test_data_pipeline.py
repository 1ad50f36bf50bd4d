"""Preparing the synthetic TFDS dataset and reading deterministic, per-host batches from it."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from scaling.data import builders, make_batches, pipeline, synthetic
from scaling.data import data_info as get_data_info
from scaling.errors import ScalingError

TINY = {"vocab_size": 64, "num_contexts": 100, "body_length": 13, "train_tokens": 16384,
        "validation_tokens": 4096}


def tiny_cfg(data_dir, **changes):
  cfg = pipeline.default_config()
  cfg.data_dir = str(data_dir)
  cfg.synthetic.update({**TINY, **changes})
  return cfg


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("tfds")


def equal_batches(a, b) -> bool:
  return all(np.array_equal(a[k], b[k]) for k in ("inputs", "targets", "mask"))


def test_prepare_and_read_back(data_dir):
  info = get_data_info(tiny_cfg(data_dir))
  lang = synthetic.SyntheticLanguage(synthetic.SyntheticSpec(**TINY))
  assert info.name == "synthetic" and info.vocab_size == 64
  assert info.entropy_floor == pytest.approx(lang.entropy_floor)
  assert info.train_tokens == 16384  # 1024 documents of 16 tokens.
  json.dumps(info.metadata)  # Goes into the run record.
  path = pathlib.Path(info.metadata["data_path"])
  # The floor is stored with the data, not only recomputed.
  assert json.loads((path / "metadata.json").read_text())["entropy_floor"] == info.entropy_floor
  builder = builders.ScalingSynthetic(config=builders.synthetic_config(lang.spec),
                                      data_dir=str(data_dir))
  source = builder.as_data_source("train")
  tokens = np.concatenate([source[i]["tokens"] for i in range(len(source))])
  assert tokens.size == 16384 and tokens.max() < 64
  docs = tokens.reshape(-1, 16)
  assert np.all(docs[:, 0] == synthetic.BOS)
  expected = np.concatenate([t for _, t in lang.generate_split("train")])
  np.testing.assert_array_equal(tokens, expected)
  val = builder.as_data_source("validation")
  assert sum(len(val[i]["tokens"]) for i in range(len(val))) == 4096


def test_knobs_prepare_into_different_folders(data_dir):
  a = get_data_info(tiny_cfg(data_dir)).metadata["data_path"]
  b = get_data_info(tiny_cfg(data_dir, seed=1)).metadata["data_path"]
  c = get_data_info(tiny_cfg(data_dir, zipf_exponent=1.3)).metadata["data_path"]
  assert len({a, b, c}) == 3
  assert get_data_info(tiny_cfg(data_dir)).metadata["data_path"] == a
  assert not list(pathlib.Path(data_dir).glob("**/incomplete*"))


def test_batches_shapes_and_mask(data_dir):
  src = make_batches(tiny_cfg(data_dir), split="train", seq_len=64, global_batch=8, seed=0)
  assert (src.local_batch, src.seq_len) == (8, 64)
  assert src.num_batches_per_epoch == (16384 - 1) // 64 // 8
  b = src[3]
  assert b["inputs"].shape == b["targets"].shape == b["mask"].shape == (8, 64)
  assert b["inputs"].dtype == np.int32 and b["mask"].dtype == np.float32
  np.testing.assert_array_equal(b["inputs"][:, 1:], b["targets"][:, :-1])  # Shifted windows.
  lang = synthetic.SyntheticLanguage(synthetic.SyntheticSpec(**TINY))
  window = np.concatenate([b["inputs"], b["targets"][:, -1:]], axis=1)
  logp, mask = lang.oracle_log_probs(window)
  np.testing.assert_array_equal(mask, b["mask"])
  assert b["mask"].mean() == pytest.approx(13 / 16)  # seq_len 64 = 4 documents: aligned.


def test_same_seed_and_step_give_the_same_batch(data_dir):
  kw = dict(split="train", seq_len=48, global_batch=4, seed=3)
  a, b = make_batches(tiny_cfg(data_dir), **kw), make_batches(tiny_cfg(data_dir), **kw)
  pipeline._STREAMS.clear()  # A third source that re-reads the data from disk.
  c = make_batches(tiny_cfg(data_dir), **kw)
  for step in (0, 1, 7, 500, 10_000):
    assert equal_batches(a[step], b[step]) and equal_batches(a[step], c[step])
  assert not equal_batches(a[0], a[1])
  other = make_batches(tiny_cfg(data_dir), **{**kw, "seed": 4})
  assert not equal_batches(a[0], other[0])


def test_resume_sees_the_batches_of_an_uninterrupted_run(data_dir):
  kw = dict(split="train", seq_len=64, global_batch=8, seed=0)
  full = list(make_batches(tiny_cfg(data_dir), **kw).iterate(0, 12))
  resumed = list(make_batches(tiny_cfg(data_dir), **kw).iterate(5, 7))
  assert all(equal_batches(x, y) for x, y in zip(full[5:], resumed, strict=True))


def test_each_epoch_visits_every_window_once_and_reshuffles(data_dir):
  src = make_batches(tiny_cfg(data_dir), split="validation", seq_len=64, global_batch=7, seed=0)
  n = src.num_windows
  assert n == (4096 - 1) // 64 and n % 7 == 0
  def epoch_rows(e):
    steps = range(e * src.num_batches_per_epoch, (e + 1) * src.num_batches_per_epoch)
    return [row.tobytes() for s in steps for row in src[s]["inputs"]]
  e0, e1 = epoch_rows(0), epoch_rows(1)
  assert len(set(e0)) == n and set(e0) == set(e1) and e0 != e1


def test_process_slices_concatenate_to_the_global_batch(data_dir):
  kw = dict(split="train", seq_len=64, global_batch=8, seed=1)
  whole = make_batches(tiny_cfg(data_dir), **kw)
  parts = [make_batches(tiny_cfg(data_dir), **kw, process_index=p, process_count=2)
           for p in range(2)]
  assert parts[0].local_batch == 4
  for step in (0, 1, 9, 300):
    joined = {k: np.concatenate([p[step][k] for p in parts]) for k in ("inputs", "mask")}
    np.testing.assert_array_equal(joined["inputs"], whole[step]["inputs"])
    np.testing.assert_array_equal(joined["mask"], whole[step]["mask"])


def test_user_errors_name_the_field(data_dir, tmp_path):
  with pytest.raises(ScalingError, match="data.name='no_such_dataset_xyz'"):
    get_data_info({"name": "no_such_dataset_xyz", "data_dir": str(tmp_path)})
  with pytest.raises(ScalingError, match="train.global_batch=6 is not divisible"):
    make_batches(tiny_cfg(data_dir), split="train", seq_len=64, global_batch=6, seed=0,
                 process_count=4)
  with pytest.raises(ScalingError, match="train.seq_len=8 is shorter than one synthetic document"):
    make_batches(tiny_cfg(data_dir), split="train", seq_len=8, global_batch=4, seed=0)
  with pytest.raises(ScalingError, match="fewer than train.global_batch=4096"):
    make_batches(tiny_cfg(data_dir), split="validation", seq_len=64, global_batch=4096, seed=0)
  cfg = tiny_cfg(data_dir)
  cfg.synthetic.num_context = 5  # A typo.
  with pytest.raises(ScalingError, match="unknown key data.synthetic.num_context"):
    get_data_info(cfg)


def test_catalogue_dataset_unavailable_offline(tmp_path):
  """A real TFDS name dispatches to the catalogue; offline and unprepared, the error says how."""
  cfg = {"name": "lm1b", "data_dir": str(tmp_path), "download": False}
  with pytest.raises(ScalingError, match=r"data.name='lm1b' is not prepared under data.data_dir"):
    get_data_info(cfg)


_PREPARE = """
import sys
from scaling.data import pipeline
cfg = pipeline.default_config()
cfg.data_dir = sys.argv[1]
cfg.synthetic.update(dict(vocab_size=64, num_contexts=100, body_length=13, train_tokens=1000000,
                          validation_tokens=4096, seed=11))
print(pipeline.data_info(cfg).metadata["data_path"])
"""


def test_two_processes_preparing_at_once(tmp_path):
  procs = [subprocess.Popen([sys.executable, "-c", _PREPARE, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
  paths = {o[0].strip().splitlines()[-1] for o in outs}
  assert len(paths) == 1
  assert not list(tmp_path.glob("**/incomplete*"))


def test_catalogue_windows_pack_records_and_mask_padding():
  """The packing used for TFDS catalogue datasets, on an in-memory stand-in for a data source."""
  texts = [b"hello world", b"abc", "Grüße".encode(), b"x" * 40, b"end"] * 8
  source = [{"text": t} for t in texts]
  windows = pipeline._PackedRecordWindows(source, "text", seq_len=16)
  assert windows.docs_per_window == 1  # Mean document (13 tokens with BOS) < 17 tokens.
  assert len(windows) == len(source)
  w0 = windows[0]
  bos = 256
  expected = [bos, *b"hello world", bos, *b"abc", bos]  # Records 0 and 1, then record 2's BOS.
  np.testing.assert_array_equal(np.append(w0["inputs"], w0["targets"][-1])[:17], expected[:17])
  assert w0["mask"].min() == 1.0
  last = windows[len(windows) - 1]  # Only "end" is left: padded, and the padding is masked.
  np.testing.assert_array_equal(last["mask"], (np.arange(1, 17) < 4).astype(np.float32))
  src = pipeline.BatchSource(windows, split="train", seq_len=16, global_batch=4, seed=0,
                             process_index=0, process_count=1)
  assert src[0]["inputs"].shape == (4, 16) and src.num_batches_per_epoch == 10
