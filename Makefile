# Two entry points: `make test` and `make reproduce`. Everything else is set-up they need,
# plus `make lab` (JupyterLab in the project's environment) and `make check-renders`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= paper
# Optional dependency groups installed into .venv (CI adds ray, to test the Ray executor).
EXTRAS ?= dev
DEVICE ?= auto
SHARED_DATA ?= ../shared/data
NOTEBOOK_TESTS := build/nbtest
export PYTHONHASHSEED := 0

.PHONY: test reproduce lint unit notebooks data venv benchmark clean lab check-renders

test: lint unit notebooks  ## ruff, pytest, every notebook at the smoke profile under nbval

# ONLY="replay lwf": those notebooks only; SEEDS=10: seeds per experiment; FORCE=1: re-run unchanged
# notebooks; ALLOW_DIRTY=1: a paper render from uncommitted changes (the stamps record it);
# WAIT=0: give up at once instead of waiting for another render of the same notebook;
# EXECUTOR=ray: the runs as Ray tasks (RAY_ADDRESS: a cluster; needs `pip install -e '.[ray]'`).
reproduce: venv data  ## run every notebook at PROFILE (paper) and refresh results/, figures/, README
	$(BIN)/python -m clrepro.run.pipeline reproduce --profile $(PROFILE) --device $(DEVICE) $(if $(FORCE),--force) \
		$(if $(ONLY),--only $(ONLY)) $(if $(SEEDS),--n-seeds $(SEEDS)) $(if $(ALLOW_DIRTY),--allow-dirty) \
		$(if $(WAIT),--wait $(WAIT)) $(if $(EXECUTOR),--executor $(EXECUTOR))

check-renders: venv  ## which rendered notebooks are stale (exit 1 if any); not part of `make test`
	$(BIN)/python -m clrepro.run.pipeline check-renders --profile $(PROFILE)

# JupyterLab is an optional extra (heavy, and neither test nor reproduce needs it).
lab: venv data $(VENV)/.lab-installed  ## open the notebooks in JupyterLab, on the project's environment
	$(BIN)/jupyter lab --notebook-dir=notebooks

$(VENV)/.lab-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,lab]'
	touch $@

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or pass PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

# The local dataset copy beside the checkout, when there is one; otherwise the first use
# downloads (checksummed) through torchvision.
data: venv
	@if [ -d "$(SHARED_DATA)" ]; then $(BIN)/python -W ignore::RuntimeWarning:runpy -m clrepro.data.datasets \
		prepare $(SHARED_DATA); \
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
