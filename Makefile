# Every install step lives here so a fresh clone works: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
TORCH_VERSION ?= 2.13.0
# where PyPI's Linux torch wheel is the CUDA build: make TORCH_INDEX=https://download.pytorch.org/whl/cpu demo
TORCH_INDEX ?=
DEMO_DIR ?= demo_work

.PHONY: install demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and pinned: a bare `torch` (e.g. from acvl-utils) would pull a multi-GB CUDA build
	$(PIP) install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m itermask_auto.demo --work-dir $(DEMO_DIR)

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(DEMO_DIR) build *.egg-info
