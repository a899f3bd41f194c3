# The two README commands: `make serve` (the local API with the demo models) and `make test`.
# Both start from a fresh clone: they create .venv, install the project with its extras,
# install the pinned CDK CLI from npm, and build the demo models (cached after the first time).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export NODE_NO_WARNINGS := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup build serve test bench synth clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[build,infra,dev]'
	touch $@

node_modules/.installed: $(wildcard package.json package-lock.json)
	@if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; fi
	mkdir -p node_modules && touch $@

setup: $(VENV)/.installed node_modules/.installed

build: setup
	$(BIN)/maas build

serve: build
	$(BIN)/maas serve --port $(PORT)

test: build
	$(BIN)/python -m pytest -q

bench: build
	$(BIN)/maas bench

synth: build
	npx cdk synth --quiet

clean:
	rm -rf build cdk.out .cache
