"""Flax NNX models.

Parameters carry logical axis names, and `scaling.parallel.sharding` places them from the config's
rules table inside a jitted initialiser. Flax's eager sharding (which shards each Variable on
creation, from a mesh in context) is turned off so that logical names are never mistaken for
mesh axes and models can be built outside any mesh (tests, `scaling info`).
"""

from flax import nnx

nnx.use_eager_sharding(False)
