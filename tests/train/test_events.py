"""TensorBoard events are written without importing torch (tensorboardX imports it whenever it is
installed, which cost every run 2.5-2.9 s of start-up)."""

import subprocess
import sys

PROBE = """
import pathlib, sys
from scaling.train.events import Events
events = Events(pathlib.Path(sys.argv[1]))
events.write({"step": 1, "loss": 2.5, "per_layer": [0.1, 0.2]})
print(sorted(m for m in ("torch", "tensorboardX") if m in sys.modules))
"""


def test_events_are_written_without_importing_torch(tmp_path):
  import torch  # noqa: F401  (the dev extra has it: the import to avoid must be possible)
  out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True,
                       text=True, check=True).stdout
  assert out.strip() == "['tensorboardX']"
  (event_file,) = (tmp_path / "tb").iterdir()
  assert event_file.name.startswith("events.out.tfevents") and event_file.stat().st_size > 0
