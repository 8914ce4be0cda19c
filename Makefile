# qsmprep developer entry points. Every target installs what it needs into .venv.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
DEMO_DIR ?= demo
NPROCS ?= 2

.PHONY: help venv install test test-fast demo clean docker benchmarks

help:
	@echo "make demo   - install into $(VENV), simulate a small longitudinal cohort, run participant + group"
	@echo "make test   - install into $(VENV) with test extras and run pytest"
	@echo "make docker - build the container image (docker, or podman where no daemon runs)"

$(VENV)/.created:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[test]"
	touch $@

venv: $(VENV)/.created
install: $(VENV)/.installed

test: install
	$(VENV)/bin/pytest -n $(NPROCS) --dist loadfile --durations=15 -ra tests

test-fast: install
	$(VENV)/bin/pytest -n $(NPROCS) --dist loadfile -m "not slow" tests

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh "$(DEMO_DIR)" "$(NPROCS)"

benchmarks: install
	$(PY) benchmarks/accuracy.py
	$(PY) benchmarks/speed.py

docker:
	bash scripts/build_image.sh

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info .pytest_cache
