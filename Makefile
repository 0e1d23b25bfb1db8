# pssync: `make demo` runs the slice on the local stack, `make test` runs every test.
# Both set everything up on first use (Python venv, PostgreSQL, Kafka, Connect, registry).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install up down status demo test unit integration lint bench soak clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

up: install
	$(BIN)/python docker/local/stack.py up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python docker/local/stack.py down; fi

status: install
	$(BIN)/python docker/local/stack.py status

demo: up
	$(BIN)/pssync demo

test: up lint
	$(BIN)/pytest tests
	$(MAKE) soak SOAK_PROFILE=short

unit: install
	$(BIN)/pytest tests/unit

integration: up
	$(BIN)/pytest tests/integration

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy streams schemas connectors tables bench docker/local/stack.py tests/sandbox.py tests/soak

bench: up
	$(BIN)/python bench/slice_bench.py

# Fault soak on this clone's stack (kills its Kafka and Connect): SOAK_PROFILE=short|long,
# SOAK_SEED=<n> repeats a run.
SOAK_PROFILE ?= short
soak: up
	$(BIN)/python -m tests.soak --profile $(SOAK_PROFILE) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

# stack.py clean stops the stack and removes its PostgreSQL cluster, which may live outside
# .stack (see README); without the venv, the system Python runs it (it needs no packages).
clean:
	@if [ -x $(BIN)/python ]; then $(BIN)/python docker/local/stack.py clean; \
	elif [ -d .stack ]; then PYTHONPATH=. $(PYTHON) docker/local/stack.py clean; fi
	rm -rf .stack $(VENV)
