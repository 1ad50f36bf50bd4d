"""Benchmark of the data pipeline: preparation time, batch throughput, floor vs oracle loss.

    python experiments/bench_data.py [--data_dir DIR] [--seq_len 128] [--global_batch 64]

Prints one JSON object: `prepare_s` (generating and writing the default synthetic dataset from
scratch into a fresh folder), `batches_per_s` and `tokens_per_s` for `BatchSource.__getitem__`,
and, in nats per scored token, the stated `entropy_floor`, the `oracle_loss` measured on
validation batches (with its standard error), `unigram_entropy` and `quanta_curve`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from scaling.data import SyntheticLanguage, SyntheticSpec, data_info, default_config, make_batches


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", default="")
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--global_batch", type=int, default=64)
  parser.add_argument("--batches", type=int, default=200)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    cfg = default_config()
    cfg.data_dir = args.data_dir or tmp
    start = time.perf_counter()
    info = data_info(cfg)
    prepare_s = time.perf_counter() - start

    train = make_batches(cfg, split="train", seq_len=args.seq_len,
                         global_batch=args.global_batch, seed=0)
    start = time.perf_counter()
    for step in range(args.batches):
      train[step]
    per_batch = (time.perf_counter() - start) / args.batches

    lang = SyntheticLanguage(SyntheticSpec(**cfg.synthetic.to_dict()))
    valid = make_batches(cfg, split="validation", seq_len=args.seq_len,
                         global_batch=args.global_batch, seed=0)
    losses = []
    for step in range(valid.num_batches_per_epoch):
      b = valid[step]
      window = np.concatenate([b["inputs"], b["targets"][:, -1:]], axis=1)
      logp, mask = lang.oracle_log_probs(window)
      losses.append(-logp[mask > 0])
    losses = np.concatenate(losses)
  print(json.dumps({
      "prepare_s": round(prepare_s, 3),
      "train_tokens": info.train_tokens,
      "vocab_size": info.vocab_size,
      "seq_len": args.seq_len,
      "global_batch": args.global_batch,
      "batches_per_s": round(1.0 / per_batch, 1),
      "tokens_per_s": round(args.global_batch * args.seq_len / per_batch),
      "entropy_floor": info.entropy_floor,
      "oracle_loss": float(losses.mean()),
      "oracle_loss_se": float(losses.std() / np.sqrt(losses.size)),
      "oracle_scored_targets": int(losses.size),
      "unigram_entropy": info.metadata["unigram_entropy"],
      "quanta_curve": info.metadata["quanta_curve"],
  }, indent=1))


if __name__ == "__main__":
  main()
