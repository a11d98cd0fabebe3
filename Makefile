# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   # creates .venv if missing, installs, runs the end-to-end demo
#   make test   # same bootstrap, then the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= demo_out

.PHONY: demo test lint install clean

install: $(STAMP)

# The stamp depends on setup.py: a second run skips the install unless dependencies changed.
$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.demo --work_dir=$(DEMO_DIR)

# Two pytest-xdist workers for the 2-core machine; whole files per worker (--dist loadfile) so
# module-scoped fixtures (exports, services, shards) are built once.
test: $(STAMP)
	$(PY) -m ruff check transfer_tf pipelines tests
	$(PY) -m pytest -q -n 2 --dist loadfile tests

lint: $(STAMP)
	$(PY) -m ruff check transfer_tf pipelines tests

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
