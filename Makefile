# The two commands of the README: `make demo` and `make test`. Both set everything up from scratch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit kafka-jars bench schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/streamfit demo

kafka-jars: $(STAMP)
	$(BIN)/python -c "from tests.support.kafka_server import resolve_jars; print('Kafka jars in', resolve_jars())"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) kafka-jars lint typecheck
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest -m "not kafka"

bench: $(STAMP) kafka-jars
	$(BIN)/python -m benchmarks

schemas: $(STAMP)
	$(BIN)/python -m scripts.write_schemas

clean:
	rm -rf $(VENV) .streamfit demo-run .mypy_cache .ruff_cache .pytest_cache
