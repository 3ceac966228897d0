# Two commands on a fresh machine: `make demo` runs the product, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
SETUP_INPUTS := pyproject.toml scripts/setup.sh $(wildcard jvm/*/pom.xml)

.PHONY: setup demo demo-cassandra test bench clean

$(STAMP): $(SETUP_INPUTS)
	bash scripts/setup.sh
	touch $(STAMP)

# The tests also need pytest, Playwright and Chromium (the browser tests).
$(TEST_STAMP): $(SETUP_INPUTS)
	bash scripts/setup.sh --test
	touch $(STAMP) $(TEST_STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/harmony demo

demo-cassandra: $(STAMP)
	$(BIN)/harmony demo --store cassandra

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	-$(BIN)/harmony stack down
	rm -rf $(VENV) .harmony
