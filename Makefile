# `make test` sets up .venv (CPU JAX) on a fresh machine and runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-demo lint install clean slurm demo

# pip compiles every installed module to bytecode on one core (~18K files, torch and
# transformers most of them); compileall does the same on every core. It reports the few files
# written for newer Pythons (torch's py312 test helpers) and exits 1 for them; pip ignores them too.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e '.[dev]'
	$(BIN)/python -m compileall -q -j0 $(VENV)/lib >/dev/null || true
	touch $(STAMP)

install: $(STAMP)

# The main job: train the CPU demo ladder (15 fitted IsoFLOP runs and one held-out run) on the
# embedded synthetic language, two runs at a time (one per core: these tiny models use about
# one core each), then fit the Chinchilla law with bootstrap intervals, the held-out prediction,
# self-checks and plots into runs/demo/fit. The ladder's sizes and budgets are chosen, so the
# bootstrap resamples the fit's residuals, not the runs (experiments/bootstrap_coverage.py
# measures both on this design). See configs/ladders/cpu_demo.py for the figures.
demo: $(STAMP)
	$(BIN)/scaling ladder run configs/ladders/cpu_demo.py --workdir=runs/demo --parallel=2
	$(BIN)/scaling results collect runs/demo --out=runs/demo/results.csv
	$(BIN)/scaling fit runs/demo --law=chinchilla --approach=3 --bootstrap=200 \
	  --resample=residuals --out=runs/demo/fit

# Slurm for the batch-job tests (tests/ladder/test_slurm.py starts a one-node cluster on
# localhost). Best effort: Debian/Ubuntu as root only, a no-op once installed, never fails the
# build (without it the Slurm tests skip and say why).
slurm:
	-@command -v slurmctld >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null 2>&1 && \
	  timeout 900 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq slurmctld slurmd slurm-client munge' >/dev/null 2>&1; } || \
	  echo "note: Slurm is not installed; the Slurm tests will skip"

# Tests compile the same tiny programs many times (in both xdist workers and in the ladder
# workers they start): JAX's persistent compilation cache, fresh for every run so that a stale
# entry can never hide a change, compiles each once. Whole files go to the two workers heaviest
# first (the order tests/conftest.py gives them; `--no-loadscope-reorder` keeps it), so that
# neither worker ends on a long file while the other idles. tests/conftest.py also compiles most
# tests without XLA's backend optimizations (about half the compile time) and every test with
# XLA's older CPU fusion emitters (about half again), and lets a late collective wait instead
# of aborting. On a fresh machine the venv's pip install and Slurm's
# apt-get install run side by side (a -j2 sub-make): both spend most of their time on downloads.
# The log ends with the 20 slowest tests: where the suite's 15 minutes go.
test:
	@$(MAKE) --no-print-directory -j2 $(STAMP) slurm
	$(BIN)/ruff check scaling configs experiments tests
	rm -rf .jax-cache
	XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
	  JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.jax-cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 \
	  $(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m "not demo" \
	    --durations=20 tests

# The cooldown branches of configs/ladders/cpu_branches.py against the same grid of cosine runs,
# both trained afresh (tests/ladder/test_cpu_branches.py, ~190 s and ~350 CPU-s on 2 idle
# cores). `make test` runs the same check on both grids as recorded in tests/ladder/
# cpu_branches_{wsd,cosine}.csv, with their depth 1 retrained, for its 15 minutes.
test-demo: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
	  $(BIN)/python -m pytest -q -m demo tests/ladder/test_cpu_branches.py

lint: $(STAMP)
	$(BIN)/ruff check scaling configs experiments tests

clean:
	rm -rf $(VENV) .pytest_cache
