"""Flax NNX models: `layers` (attention, MLP, norms, positions), `moe` (routed experts), `dense`
(the transformer stack and its sharded construction), `shapes` (preset and ladder shapes),
`parametrization` (SP and μP multipliers by parameter group).

Parameters carry logical axis names, and `scaling.parallel.sharding` places them from the config's
rules table inside a jitted initialiser (see `layers.no_eager_sharding`).
"""
