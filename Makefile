# pssync: `make demo` runs the slice on the local stack, `make test` runs every test.
# Both set everything up on first use (Python venv, PostgreSQL, Kafka, Connect, registry,
# the ERP and the PSA).

# The worker is CPU-bound Python, so the interpreter's build sets its speed: a distribution's
# python3, like the image's python:3.11-slim (docker/Dockerfile), is built with PGO and LTO
# and ran the sink-only worker ~20% faster than a plain source build (pyenv's default) in
# alternated runs. So the system's python3 when it is 3.11+ and can make a venv, else the
# first python3 on PATH. `make PYTHON=...` picks another; an existing .venv keeps its own
# (remove it to switch).
PY_OK  := import sys, ensurepip; ensurepip.version(); sys.exit(sys.version_info < (3, 11))
ifeq ($(origin PYTHON),undefined)
PYTHON := $(or $(shell /usr/bin/python3 -c '$(PY_OK)' 2>/dev/null && echo /usr/bin/python3),python3)
endif
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install up down status demo test unit integration lint bench bench-quick bench-scale bench-slice bench-restart bench-stop bench-saga bench-close bench-invoices soak clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,stack]'
	touch $@

install: $(VENV)/.installed

# The Quix Streams benchmark peer pins an older confluent-kafka than pssync: its own venv.
QUIX_VENV := .venv-quix
$(QUIX_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install -q --upgrade pip
	$(QUIX_VENV)/bin/pip install -q -e '.[bench-quix]'
	touch $@

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
	$(BIN)/mypy streams schemas connectors tables bench docker/local/stack.py docker/local/components tests/sandbox.py tests/soak

# pssync beside its peers (plain loop, Quix Streams, Debezium JDBC sink), then one worker
# against two in a group (bench/scale_out.py, 3 alternated runs, medians), then restart and
# RSS with 1M dedupe keys: ~50 min; BENCH_ARGS e.g. "--events 20000 --runs 1".
# bench-quick: 1-2 min (peers only). bench-scale: the scale-out part alone. bench-slice:
# capture, worker, sink.
# Only what the peers use: an ERP or PSA started for nothing would share the cores.
BENCH_STACK := postgres,kafka,registry,connect
bench: install $(QUIX_VENV)/.installed
	$(BIN)/python docker/local/stack.py up --only $(BENCH_STACK)
	$(BIN)/python bench/peers.py $(BENCH_ARGS)
	$(BIN)/python bench/scale_out.py --runs 3
	$(BIN)/python bench/restart_bench.py

bench-scale: install
	$(BIN)/python docker/local/stack.py up --only $(BENCH_STACK)
	$(BIN)/python bench/scale_out.py $(SCALE_ARGS)

bench-quick: install $(QUIX_VENV)/.installed
	$(BIN)/python docker/local/stack.py up --only $(BENCH_STACK)
	$(BIN)/python bench/peers.py --quick

bench-slice: up
	$(BIN)/python bench/slice_bench.py

# Closed-won -> PSA project latency over SAGA_ARGS (default 100 deals, one closed every 2 s):
# the whole stack, the ERP and the PSA included.
bench-saga: up
	$(BIN)/python bench/saga_latency.py $(SAGA_ARGS)

# Invoice posted in Tryton -> CRM opportunity updated, over N invoices (INVOICE_ARGS).
bench-invoices: up
	PYTHONPATH=. $(BIN)/python bench/invoice_latency.py $(INVOICE_ARGS)

# Period close: approved time entries by bulk SQL through the ERP posting queue at a limited
# rate (CLOSE_ARGS="--entries 100000 --rate 50" for the full size; 2,000 by default).
bench-close: up
	PYTHONPATH=. $(BIN)/python bench/period_close.py $(CLOSE_ARGS)

# Worker restart time with a 1M-key dedupe table: memory vs RocksDB (cold, warm) table state.
bench-restart: install
	$(BIN)/python docker/local/stack.py up --only $(BENCH_STACK)
	$(BIN)/python bench/restart_bench.py

# SIGTERM to exit with a backlog of saga commands behind the CRM's rate limit.
bench-stop: up
	$(BIN)/python bench/stop_time.py $(STOP_ARGS)

# Fault soak on this clone's stack (kills its Kafka and Connect): SOAK_PROFILE=short|long,
# SOAK_SEED=<n> repeats a run.
# Only the slice's components, like the benchmarks.
SOAK_PROFILE ?= short
soak: install
	$(BIN)/python docker/local/stack.py up --only $(BENCH_STACK)
	$(BIN)/python -m tests.soak --profile $(SOAK_PROFILE) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

# stack.py clean stops the stack and removes its PostgreSQL cluster, which may live outside
# .stack (see README); without the venv, the system Python runs it (it needs no packages).
clean:
	@if [ -x $(BIN)/python ]; then $(BIN)/python docker/local/stack.py clean; \
	elif [ -d .stack ]; then PYTHONPATH=. $(PYTHON) docker/local/stack.py clean; fi
	rm -rf .stack $(VENV) $(QUIX_VENV)
