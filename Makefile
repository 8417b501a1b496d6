# Baynet — two commands from a fresh clone: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install system-deps demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]" -c constraints.txt
	touch $@

# Debian's Prometheus: the real topology source for the demo and the integration tests.
system-deps:
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's prometheus"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "prometheus is not installed and this is not root: run 'sudo apt-get install -y prometheus'"; \
	  fi; \
	fi

demo: install system-deps
	$(BIN)/baynet demo

test: install system-deps
	$(BIN)/pytest -m "not slow"

test-fast: install
	$(BIN)/pytest -m "not slow and not integration and not e2e"

bench: install
	$(BIN)/pytest -m slow

clean:
	rm -rf $(VENV) demo-run artifacts .pytest_cache
