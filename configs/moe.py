"""Mixture-of-Experts presets.

  scaling info  --config=configs/moe.py:mixtral_8x7b --json
  scaling train --config=configs/moe.py:tiny --workdir=/tmp/moe_tiny

`get_config(arg)`: `tiny` (8 experts, top-2, runs on CPU in seconds), `tiny_dense` (the dense
model with the same active parameters per token as `tiny`, for comparisons), `mixtral_8x7b`
(Jiang et al. 2024: 32 layers, d 4096, 8 experts of width 14336, top-2, GQA 8 kv heads;
46,702,792,704 parameters, 12,879,925,248 active).
"""

from scaling.config import default_config, validate_model
from scaling.models.shapes import get_shape

PRESETS = {
    "tiny": dict(model=dict(num_layers=2, d_model=64, num_heads=4, num_kv_heads=4, d_ff=128,
                            vocab_size=512, max_len=128),
                 moe=dict(num_experts=8, top_k=2, expert_d_ff=128)),
    # Dense twin of `tiny`: one MLP as wide as the two experts a token uses.
    "tiny_dense": dict(model=dict(num_layers=2, d_model=64, num_heads=4, num_kv_heads=4,
                                  d_ff=256, vocab_size=512, max_len=128), moe=dict()),
    "mixtral_8x7b": dict(model=dict(num_layers=32, d_model=4096, num_heads=32, num_kv_heads=8,
                                    d_ff=14336, vocab_size=32000, max_len=4096, mlp="swiglu",
                                    position="rope", rope_base=1e6, tied_embeddings=False,
                                    norm_eps=1e-5),
                         moe=dict(num_experts=8, top_k=2, expert_d_ff=14336,
                                  gating="topk_softmax")),
}


def get_config(arg: str | None = None):
  cfg = default_config()
  name = arg or "tiny"
  if name not in PRESETS:
    get_shape(name)  # raises the standard "unknown preset" error for non-MoE names
  preset = PRESETS[name]
  cfg.model.update(preset["model"], name=name)
  cfg.model.moe.update(preset["moe"])
  cfg.train.seq_len = min(cfg.model.max_len, 2048)
  validate_model(cfg.model)
  return cfg
