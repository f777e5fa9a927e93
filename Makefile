# Two commands from a fresh clone (only python3 and make needed): `make run` trains the main
# job on its embedded default, `make test` runs the tests. Both create .venv when missing and
# reinstall it when pyproject.toml or setup.py change.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint venv clean

run: $(STAMP)
	$(BIN)/lbdl-graph train lenet

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python .ci/typecheck.py

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,distributed]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs
