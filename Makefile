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

# The QA / captioning demos' model and schedule (docs/tasks.md has the measured figures).
TASK_DEMO_FLAGS := --hidden_size 64 --num_layers 1 --image_size 32 --num_frames 4 --max_words 16 \
	--batch_size 32 --learning_rate 1e-3 --temperature 0.01

demo-qa: venv
	$(PY) scripts/demo_tasks.py --task qa --output_dir outputs/demo-qa --num_train_epochs 3 $(TASK_DEMO_FLAGS)

demo-captioning: venv
	$(PY) scripts/demo_tasks.py --task captioning --output_dir outputs/demo-captioning --num_train_epochs 12 $(TASK_DEMO_FLAGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info

demo: venv
	$(PY) scripts/demo.py --output_dir outputs/demo
