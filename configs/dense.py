"""Dense transformer presets.

  scaling info  --config=configs/dense.py:chinchilla_70b --mesh=data:64,model:8
  scaling train --config=configs/dense.py:tiny --workdir=/tmp/tiny

`get_config(arg)` picks a model shape: a preset name from `scaling.models.shapes.PRESETS`
(tiny, small, gpt2_124m, gpt3_175b, chinchilla_70b, llama2_7b, llama2_70b) or `ladder_d<depth>`
for a rung of the ladder rule. Training and data fields keep their defaults.
"""

from scaling.config import default_config, validate_model
from scaling.models.shapes import get_shape


def get_config(arg: str | None = None):
  cfg = default_config()
  cfg.model.update(get_shape(arg or "tiny"))
  cfg.train.seq_len = cfg.model.max_len  # published shapes are counted at their own context
  validate_model(cfg.model)
  return cfg
