# `make demo` and `make test` bootstrap .venv from pyproject.toml on a fresh machine.
PY := .venv/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast test-tf test-jax test-distributed test-torch package clean

.venv/installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: .venv/installed
	$(PY) -m zoo.cli report

test: test-tf test-jax

# The unit tests on TensorFlow, a few minutes: everything but the tests marked `slow` (recipe runs, the browser
# and Node tests, fresh venvs, distributed subprocesses, anything over about 5 s). `make test` runs them all.
test-fast: .venv/installed
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q -x --durations=15 -m "not slow" tests

test-tf: .venv/installed
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q -x --durations=15 tests

# Losses and methods again on JAX: the same fit() must run on every backend.
test-jax: .venv/installed
	KERAS_BACKEND=jax $(PY) -m pytest -q -x --durations=15 -m multibackend tests

# Data-parallel training alone, on both backends (2 virtual CPU devices in subprocesses; also part of `test`:
# test-tf runs every `distributed` test, test-jax those also marked `multibackend`).
test-distributed: .venv/installed
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q -x -m distributed tests/test_distributed.py
	KERAS_BACKEND=jax $(PY) -m pytest -q -x -m "distributed and multibackend" tests/test_distributed.py

# The same on torch; not part of `test` (CI has no torch). Needs a CPU torch in .venv: a plain
# `pip install torch` pulls the CUDA build (GBs), so install a `+cpu` wheel.
test-torch: .venv/installed
	KERAS_BACKEND=torch $(PY) -m pytest -q -m multibackend tests

# The core wheel (code, bundled data, MTCNN graphs; no entry) and one wheel per entry of exports/, into dist/.
# Offline: setuptools from .venv builds them (no build isolation, no index); build/ is cleared first so no
# stale module of an earlier build reaches the wheel.
package: .venv/installed
	rm -rf build
	$(PY) -m pip wheel -q --no-deps --no-build-isolation --no-index -w dist .
	for card in exports/*/card.json; do $(PY) -m zoo.cli package "$$(basename "$$(dirname "$$card")")" --out dist || exit 1; done

clean:
	rm -rf .venv build *.egg-info report
