# Two commands do everything on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python

.PHONY: run test lint format install install-mmdet test-mmdet bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# Optional MMDetection backend (detector=mmdet_mask_rcnn): builds mmcv once, cached under .cache/wheels/.
install-mmdet: $(STAMP)
	bash scripts/install_mmdet.sh $(PY)

test-mmdet: install-mmdet
	$(PY) -m pytest -q -m mmdet $(ARGS)

run: $(STAMP)
	$(PY) -m sgseg.train $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check sgseg tests scripts
	$(VENV)/bin/ruff format --check sgseg tests scripts

format: $(STAMP)
	$(VENV)/bin/ruff check --fix sgseg tests scripts
	$(VENV)/bin/ruff format sgseg tests scripts

bench: $(STAMP)
	$(PY) scripts/bench_evaluator.py

clean:
	rm -rf $(VENV) .pytest_cache
