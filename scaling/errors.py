"""The one exception type for mistakes a user can make (config, mesh, data, tables).

The CLI turns a `ScalingError` into a single `error: ...` line on stderr and a non-zero exit,
so its message must name the offending field and say how to fix it.
"""

from __future__ import annotations


class ScalingError(ValueError):
  """A user-facing error: bad config, bad mesh, missing data, bad result table."""


def require(condition: bool, message: str) -> None:
  """Raises `ScalingError(message)` unless `condition` holds."""
  if not condition:
    raise ScalingError(message)
