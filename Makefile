# Quick start: `make demo` and `make test`; each sets up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of PyTorch for this machine; GPU users: `make setup TORCH=` after installing their own build into .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(TORCH),$(BIN)/python -m pip install --quiet "$(TORCH)")
	# the pin again: nnunetv2 pulls torchvision, whose newest release would otherwise replace torch
	$(BIN)/python -m pip install --quiet -e ".[test]" $(if $(TORCH),"$(TORCH)")
	touch $(STAMP)

demo: setup
	$(BIN)/vectorpose demo $(DEMO_DIR) --overwrite

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
