# Entry points for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test install test-deps browser lint bench wrk clean

$(BIN)/python:
	@echo "make: creating the virtualenv $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when pyproject.toml changes.
.make-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

.make-test-deps: pyproject.toml | $(BIN)/python
	@echo "make: installing authserver and what its tests need into $(VENV)"
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@ .make-installed

install: .make-installed

run: .make-installed
	$(BIN)/authserver db upgrade
	$(BIN)/authserver keys ensure
	$(BIN)/authserver serve --host $(HOST) --port $(PORT)

test-deps: .make-test-deps browser

# The browser tests drive Debian's Chromium through its ChromeDriver (no browser download).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "make: installing Debian's chromium and chromium-driver for the browser tests" \
	       "(apt-get; its output in .make-browser.log)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $$SUDO apt-get install -y -qq chromium chromium-driver; } >.make-browser.log 2>&1 || { \
	  tail -20 .make-browser.log; exit 1; }; }

test: test-deps
	$(BIN)/ruff check authserver tests migrations $(wildcard benchmarks)
	$(BIN)/mypy -p authserver
	$(BIN)/python -m pytest -n auto --dist loadgroup $(PYTEST_ARGS)

lint: .make-test-deps
	$(BIN)/ruff check authserver tests migrations $(wildcard benchmarks)
	$(BIN)/mypy -p authserver

# The benchmark drives every server with wrk (Debian's package) and runs node-oidc-provider
# beside ours (npm installs it into ~/.cache/authserver-bench on first use).
wrk:
	@command -v wrk >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk; }

bench: .make-test-deps wrk
	$(BIN)/python benchmarks/refresh.py $(BENCH_ARGS)

# build/ and *.egg-info: what pip wheel . and pip wheel ./authserver/resource leave behind.
clean:
	rm -rf $(VENV) .make-* instance .pytest_cache build dist *.egg-info \
	  authserver/resource/build authserver/resource/*.egg-info
