"""The Colab notebooks in colab/: pairs in sync, outputs stripped, and each one runs top to bottom.

Every notebook is stored twice: `colab/NAME.ipynb` (outputs stripped, what Colab opens) and
`colab/NAME.py` (jupytext py:percent, what reviewers diff). After editing one, run
`.venv/bin/jupytext --sync colab/NAME.py` (or `--to ipynb`) to update the other.

Execution uses nbclient with the `python3` kernel, which jupyter_client starts with this
interpreter (the venv's python), with `SCALING_NOTEBOOK_SMOKE=1` so every notebook shrinks to CI
sizes, synthetic data under a temporary directory, and HTTP(S) proxies pointed at a closed port so
that an accidental download fails instead of passing.
"""

import os
import pathlib
import re
import sys
import time

import jupytext  # dev dependencies: a missing one is a failure, not a skip
import nbclient
import nbformat
import pytest

from tests.helpers import xla_flags

COLAB = pathlib.Path(__file__).resolve().parents[1] / "colab"
NOTEBOOKS = ("quickstart", "chinchilla_replication", "moe_routing", "emergence")
# The Chinchilla replication is bootstrap fits, which run faster optimized (tests/conftest.py).
EXECUTED = [pytest.param(n, marks=pytest.mark.xla_optimized) if n == "chinchilla_replication"
            else n for n in NOTEBOOKS]
SMOKE_ENV = "SCALING_NOTEBOOK_SMOKE"


def _cells(nb) -> list[tuple[str, str]]:
  return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_every_notebook_is_listed_and_paired():
  assert sorted(p.stem for p in COLAB.glob("*.ipynb")) == sorted(NOTEBOOKS)
  for name in NOTEBOOKS:
    assert (COLAB / f"{name}.py").exists(), f"colab/{name}.py (the jupytext twin) is missing"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pair_in_sync(name):
  ipynb = jupytext.read(COLAB / f"{name}.ipynb")
  text = jupytext.read(COLAB / f"{name}.py")
  assert _cells(ipynb) == _cells(text), (
      f"colab/{name}.ipynb and colab/{name}.py differ; run "
      f"`.venv/bin/jupytext --sync colab/{name}.py` after editing one of them")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_outputs_stripped(name):
  nb = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          f"colab/{name}.ipynb cell {i} has stored outputs; strip them "
          f"(`.venv/bin/jupytext --to ipynb colab/{name}.py` writes a clean notebook)")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_structure(name):
  """Opens with a statement of what it shows, ends with the take-aways, installs from one URL,
  and has a parameters cell that reads the smoke-test variable."""
  nb = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
  first, last = nb.cells[0], nb.cells[-1]
  assert first.cell_type == "markdown" and first.source.startswith("# ")
  assert len(first.source.split("\n\n", 1)[-1]) > 300, "the opening paragraph is missing"
  assert last.cell_type == "markdown" and last.source.startswith("## What to take away")
  code = [c.source for c in nb.cells if c.cell_type == "code"]
  install = [s for s in code if "REPO_URL =" in s]
  assert len(install) == 1 and 'find_spec("scaling") is None' in install[0]
  assert len(re.findall(r"https?://", "\n".join(code))) == 1, "one URL: REPO_URL"
  params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1 and SMOKE_ENV in params[0].source


def test_kernel_is_this_interpreter():
  from jupyter_client.manager import KernelManager

  cmd = KernelManager(kernel_name="python3").format_kernel_cmd()
  assert os.path.realpath(cmd[0]) == os.path.realpath(sys.executable), (
      f"the python3 kernel starts {cmd[0]}, not {sys.executable}")


@pytest.mark.slow
@pytest.mark.parametrize("name", EXECUTED)
def test_notebook_executes(name, tmp_path, monkeypatch):
  monkeypatch.setenv(SMOKE_ENV, "1")
  monkeypatch.setenv("SCALING_DATA_DIR", str(tmp_path / "data"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  # One CPU device, as on a Colab CPU runtime (the rest of the suite simulates 8); the notebooks'
  # batch sizes are multiples of 8, so they also run on an 8-core TPU.
  monkeypatch.setenv("XLA_FLAGS", xla_flags())
  for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens: downloads fail fast
  monkeypatch.delenv("SCALING_NOTEBOOK_FIGURES", raising=False)
  nb = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                   resources={"metadata": {"path": str(tmp_path)}})
  start = time.time()
  client.execute()
  print(f"{name}: executed in {time.time() - start:.1f} s")
