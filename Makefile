# Two commands on a fresh machine: `make demo` runs the product, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-cassandra test bench clean

$(STAMP): pyproject.toml scripts/setup.sh $(wildcard jvm/*/pom.xml)
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/harmony demo

demo-cassandra: $(STAMP)
	$(BIN)/harmony demo --store cassandra

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	-$(BIN)/harmony stack down
	rm -rf $(VENV) .harmony
