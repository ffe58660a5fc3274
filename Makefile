# Every target a user or CI needs. `make test` and `make demo` install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast demo lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,spark,dask]'
	touch $(STAMP)

# --dist loadgroup: the tests of one xdist_group run on one worker (each engine's tests share
# one Spark or Dask session there); every other test goes wherever a worker is free.
test: $(STAMP)
	$(BIN)/pytest -q -n auto --dist loadgroup

# The quick loop while editing: the unit tests, without those marked slow (subprocesses,
# kills, large end-to-end runs) or engine (Spark, Dask); under a minute. `make test` runs
# everything.
test-fast: $(STAMP)
	$(BIN)/pytest -q -n auto --dist loadgroup -m "not slow and not engine"

demo: $(STAMP)
	$(BIN)/python demo.py

lint: $(STAMP)
	$(BIN)/ruff check importer tests bench demo.py
	$(BIN)/ruff format --check importer tests bench demo.py

typecheck: $(STAMP)
	$(BIN)/mypy importer

bench: $(STAMP)
	$(BIN)/python -m bench

# Never reports/ nor state/: a job's ledger (state/state.db, the resume and changed-only state)
# lives there by default. The demo writes its reports under build/ and keeps its ledger in a
# temporary folder.
clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
