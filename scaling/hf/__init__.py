"""Hugging Face interop: `scaling export` (a run as a transformers checkpoint), `scaling import`
(a transformers checkpoint as a run's start) and `scaling score` (per-token NLL of a run).

`arch` maps configs and refuses what would compute another function, `tensors` is the one table
between parameters and HF tensors, `files` reads and writes safetensors without torch, `weights`
checks a folder and places its weights by the sharding rules, `runs` restores a run's
parameters and scores tokens, `export` and `load` (import) are the two directions.
"""
