# Baynet — two commands from a fresh clone: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install system-deps demo up down test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev,torch]" -c constraints.txt
	touch $@

# Debian packages the demo and the tests use for real: Prometheus (topology source) and Chromium (the
# report-page browser test, and screenshots).
DEBS := prometheus:prometheus promtool:prometheus chromium:chromium
system-deps:
	@missing=""; for pair in $(DEBS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$$(echo $$missing | tr -d ' ')" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages and this is not root: run 'sudo apt-get install -y $$missing'"; \
	  fi; \
	fi

# DEMO_ARGS=--from-metrics starts from Prometheus metrics: the detector finds the fault and sends the event.
demo: install system-deps
	$(BIN)/baynet demo $(DEMO_ARGS)

# The local stack in the background (Prefect UI http://127.0.0.1:4200, reports http://127.0.0.1:8080/baynet).
up: install system-deps
	$(BIN)/baynet stack up --dir .baynet-stack

down:
	$(BIN)/baynet stack down --dir .baynet-stack

test: install system-deps
	$(BIN)/pytest -m "not slow" --durations=15

test-fast: install
	$(BIN)/pytest -m "not slow and not integration and not e2e"

# Benchmarks print figures beside a baseline from the same run (minutes; the load run is ~15 min).
bench: install system-deps
	$(BIN)/pytest -m slow
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/evidence.py
	$(BIN)/python benchmarks/load.py
	$(BIN)/python benchmarks/retrieval.py

clean:
	rm -rf $(VENV) demo-run artifacts .pytest_cache .baynet-stack test-output
