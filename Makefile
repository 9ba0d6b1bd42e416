# Set-up and everyday commands. Everything installs into ./.venv.
#   make test        create the environment (first time) and run the test suite
#   make demo        create the environment, then train + evaluate retrieval on the embedded dataset
# torch is installed first, on its own, so that nothing else can pull a different build:
#   CPU machines (default): TORCH="torch==2.13.0" (the CPU build on this project's machines)
#   GPU machines:           make venv TORCH=torch   (PyPI's Linux wheel of torch is the CUDA build)

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CLIP BPE vocabulary file ships inside this wheel; installed without its dependencies
# (its torchvision requirement would replace the pinned torch).
CLIP_VOCAB_WHEEL := clip-anytorch==2.6.0

.PHONY: venv test test-slow test-hub lint demo demo-qa demo-captioning clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PY) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/constraints.txt
	$(PIP) install -q -c $(VENV)/constraints.txt -e ".[dev]"
	$(PIP) install -q --no-deps "$(CLIP_VOCAB_WHEEL)"
	touch $@

test: venv
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

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
	rm -rf $(VENV) build dist src/*.egg-info

demo: venv
	$(RETRIEVAL_DEMO)
