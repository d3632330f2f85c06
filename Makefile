# v6mostly: `make demo` and `make test` are all a newcomer needs (see README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
APT    := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

.PHONY: demo test lint bench fuzz clean debs-test

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { apt-get update -qq && $(APT) python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

# Debian packages the test suite drives: tshark verifies translated checksums.
debs-test:
	@command -v tshark >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "tshark is missing; run 'make test' as root or apt-get install tshark" >&2; exit 1; fi; \
	  apt-get update -qq && $(APT) tshark; }

demo: $(STAMP)
	$(BIN)/v6mostly demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/mypy

test: $(STAMP) debs-test lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider bench --benchmark-columns=min,median,mean,ops --benchmark-sort=name

fuzz: $(STAMP)
	$(BIN)/python tests/fuzz/harness.py 1000000

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis .benchmarks
