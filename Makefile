# Two commands matter: `make demo` (the whole pipeline on a CPU) and `make test` (the test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch/torchvision versions that lie on this project's build machines; any torch>=2.4 works for users.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo

.PHONY: venv test demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q

demo: venv
	DEMO_DIR=$(DEMO_DIR) bash scripts/demo.sh

bench: venv
	bash benchmarks/run.sh

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
