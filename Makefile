# Two commands on a fresh machine: `make demo` runs the product, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
SETUP_INPUTS := pyproject.toml constraints.txt scripts/setup.sh $(wildcard jvm/*/pom.xml)

.PHONY: setup demo demo-cassandra test bench constraints clean

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

# Two pytest-xdist workers; the tests sharing the Cassandra node, the site or a Spark session stay in
# one worker (tests/conftest.py; pytest held at 9.1: under 9.2 xdist ignores the groups, xdist#1386).
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	$(BIN)/python -m bench

# The newest versions pyproject.toml allows, resolved in a throw-away venv and pinned for setup
# (then `make test`: the suite must pass with them before they are committed).
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	PYTHONWARNINGS="ignore:Editable installation." .venv-constraints/bin/python -m pip install --quiet -e ".[test]"
	{ sed -n '/^#/p' constraints.txt; .venv-constraints/bin/python -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt
	rm -rf .venv-constraints

clean:
	-$(BIN)/harmony stack down
	rm -rf $(VENV) .harmony
