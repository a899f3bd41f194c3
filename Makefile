# The two README commands: `make serve` (the local API with the demo models) and `make test`.
# Both start from a fresh clone: they create .venv, install the project with its extras,
# install the pinned CDK CLI from npm, and build the demo models (cached after the first time).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# cfn-lint (+ cfn-lint-serverless) and checkov run on the synthesized template in the tests; they live in
# their own environment because checkov pins versions of boto3, packaging and networkx the project does not use.
LINT_VENV := .cache/tools/iac-lint
LINT_TOOLS := cfn-lint==1.58.0 cfn-lint-serverless==0.3.6 checkov==3.3.30
PORT ?= 3000
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export NODE_NO_WARNINGS := 1
export HF_HUB_OFFLINE := 1

.PHONY: setup build serve test bench bench-anchors synth lint lint-tools clean triton

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[build,infra,dev]'
	$(BIN)/pip install --quiet --no-deps $$($(BIN)/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["maas"]["no-deps"]))')
	touch $@

node_modules/.installed: $(wildcard package.json package-lock.json)
	@node -e 'process.exit(+process.versions.node.split(".")[0] < 22)' || \
		echo "note: Node $$(node --version) is end-of-life; the CDK CLI supports Node 22 and 24" >&2
	@if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; fi
	mkdir -p node_modules && touch $@

$(LINT_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --quiet --upgrade pip
	$(LINT_VENV)/bin/pip install --quiet $(LINT_TOOLS)
	touch $@

lint-tools: $(LINT_VENV)/.installed

setup: $(VENV)/.installed node_modules/.installed

# The local Triton for heavy models (`maas serve`, the tests): the tritonserver binary that NVIDIA
# ships in the nvidia-pytriton wheel (Python backend only; the wheel's own Python API is not used),
# and what its Python-backend stub imports, in a venv of their own: the 24.10 stub needs numpy<2,
# the project pins numpy 2. The wheel exists for Linux x86_64 only; elsewhere nothing is installed
# and `maas serve` runs its Python stand-in (maas/triton/standin.py).
TRITON_TOOL := .cache/tools/triton
$(TRITON_TOOL)/.installed:
	@if [ "$$(uname -s)/$$(uname -m)" = "Linux/x86_64" ]; then \
		$(PYTHON) -m venv $(TRITON_TOOL) && \
		$(TRITON_TOOL)/bin/pip install --quiet numpy==1.26.4 onnxruntime==1.32.0 && \
		$(TRITON_TOOL)/bin/pip install --quiet --no-deps nvidia-pytriton==0.7.0; \
	else \
		echo "no tritonserver wheel for $$(uname -s)/$$(uname -m): maas serve uses its stand-in"; mkdir -p $(TRITON_TOOL); \
	fi
	touch $@

triton: $(TRITON_TOOL)/.installed

build: setup
	$(BIN)/maas build

serve: build triton
	$(BIN)/maas serve --port $(PORT)

test: build triton lint-tools
	$(BIN)/python -m pytest -q

# The CPU embedding stacks `maas bench` compares against besides eager PyTorch (sentence-transformers,
# fastembed, Optimum's ONNX Runtime models), in a venv of their own: optimum-onnx pins
# transformers<4.58 and fastembed its own tokenizers range, the project pins newer ones. The bench
# runs each anchor in a worker with this venv's python, and skips them (saying so) without it.
ANCHORS_VENV := .cache/tools/bench-anchors
ANCHOR_TOOLS := torch==2.13.0 transformers==4.57.1 sentence-transformers==5.7.0 fastembed==0.9.1 \
	optimum==2.1.0 optimum-onnx==0.1.0 onnxruntime==1.32.0
$(ANCHORS_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(ANCHORS_VENV)
	$(ANCHORS_VENV)/bin/pip install --quiet --upgrade pip
	$(ANCHORS_VENV)/bin/pip install --quiet $(ANCHOR_TOOLS)
	touch $@

bench-anchors: $(ANCHORS_VENV)/.installed

bench: build bench-anchors
	$(BIN)/maas bench

synth: build
	npx cdk synth --quiet

# cfn-lint and checkov on the synthesized templates; what they may still report is in infra/lint-exceptions.toml.
lint: build lint-tools
	$(BIN)/python -m pytest -q tests/infra/test_lint.py

clean:
	rm -rf build cdk.out .cache
