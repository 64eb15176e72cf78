# Two commands matter: `make demo` (the main job on the embedded default) and `make test`.
# `make test-fast` leaves out the slow tests (guests, Orthanc, benchmark scripts) for the edit loop;
# `make lint` runs the checks CI runs before the tests.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint venv clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "pacsbench needs Python 3.11 or newer")'
	@$(PYTHON) -m venv $(VENV) || { echo "cannot create a virtual environment: on Debian run 'apt-get install python3-venv'" >&2; exit 1; }
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

venv: $(STAMP)

# Start the reference archive, synthesize ~30 MB DSA studies (cached), store them with
# 4 locust users for 20 s, write results/<run-id>/ and its report.
demo: $(STAMP)
	$(BIN)/pacsbench run scenarios/demo.toml | tee $(VENV)/last-run.txt
	$(BIN)/pacsbench report "$$(tail -n 1 $(VENV)/last-run.txt)"

# pytest-xdist: most tests wait on subprocesses and sockets. Two workers run the two lanes of QEMU
# guests (~520 and ~630 s); four processes leave two for the other ~1,540 s of tests (measured on
# 2 cores: -n 3 took 802 s, -n 4 695 s). --dist loadgroup runs the tests of a group (a lane of
# QEMU guests, the tests sharing a module's fixture: tests/helpers/groups.py, tests/conftest.py)
# on one worker, one at a time;
# --no-loadscope-reorder keeps the order conftest gives (the guest lanes, the longest, first).
XDIST := -n 4 --dist loadgroup --no-loadscope-reorder

test: $(STAMP)
	$(BIN)/pytest $(XDIST) --durations=15

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow" $(XDIST)

# The docs site's builder (the `docs` extra), on top of the venv.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[docs]'
	@touch $@

# ruff: the rule set in pyproject.toml; lint-imports: the import contracts (docs/architecture.md);
# mypy: strict on the records, the scenario schema and the analysis ([tool.mypy] in pyproject.toml);
# mkdocs: the docs site, strictly (a broken link, or a generated reference that no longer builds from the code,
# fails), into a temporary folder that is removed.
lint: $(STAMP) $(DOCS_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	site="$$(mktemp -d)" && trap 'rm -rf "$$site"' EXIT && $(BIN)/mkdocs build --strict --quiet --site-dir "$$site"

clean:
	rm -rf $(VENV) .pytest_cache
