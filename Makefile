# `make demo` and `make test` set themselves up: a .venv with the project,
# its test extras and the CPU build of torch for the reference problem.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[host,test,deploy]"
	@touch $(STAMP)

demo: $(STAMP)
	@# The job sandbox is Debian's bubblewrap; without it the demo still runs and
	@# its results say "unsandboxed".
	@test -x /usr/bin/bwrap || (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) || true
	$(BIN)/kohai demo

test: $(STAMP)
	@# Browser tests drive Debian's Chromium (never a downloaded one); the systemd
	@# unit is checked with systemd-analyze; the job sandbox is Debian's bubblewrap.
	@test -x /usr/bin/chromium -a -x /usr/bin/systemd-analyze -a -x /usr/bin/bwrap || \
		(apt-get update -qq && apt-get install -y -qq chromium systemd bubblewrap >/dev/null)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
