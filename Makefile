# Two entry points: `make test` and `make reproduce`. Everything else is set-up they need.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= paper
DEVICE ?= auto
SHARED_DATA ?= ../shared/data
NOTEBOOK_TESTS := build/nbtest
export PYTHONHASHSEED := 0

.PHONY: test reproduce lint unit notebooks data venv benchmark clean

test: lint unit notebooks  ## ruff, pytest, every notebook at the smoke profile under nbval

reproduce: venv data  ## run every notebook at PROFILE (paper) and refresh results/, figures/, README
	$(BIN)/python -m clrepro.run.pipeline reproduce --profile $(PROFILE) --device $(DEVICE) $(if $(FORCE),--force)

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The local dataset copy beside the checkout, when there is one; otherwise the first use
# downloads (checksummed) through torchvision.
data: venv
	@if [ -d "$(SHARED_DATA)" ]; then $(BIN)/python -m clrepro.data.datasets prepare $(SHARED_DATA); \
	else echo "no $(SHARED_DATA): datasets will be downloaded on first use"; fi

lint: venv
	$(BIN)/ruff check .

unit: venv data
	$(BIN)/python -m pytest -q

notebooks: venv data
	$(BIN)/python -m clrepro.run.pipeline prepare-tests --out $(NOTEBOOK_TESTS)
	CLREPRO_QUIET=1 $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider \
		-o addopts="" $(NOTEBOOK_TESTS)/*.ipynb

benchmark: venv data  ## loop overhead vs a bare PyTorch loop
	$(BIN)/python benchmarks/loop_overhead.py

clean:
	rm -rf build
