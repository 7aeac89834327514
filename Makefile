# The two commands: `make run` (the gateway) and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

BENCH  := $(VENV)/.installed-bench

.PHONY: run test lint typecheck unit docs dist bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the project's metadata changes, or the module the install compiles with
# mypyc when a C compiler is there (hatch_build.py; a stale build is left unused).
$(STAMP): pyproject.toml hatch_build.py src/tidings/_fastpath.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

$(BENCH): pyproject.toml hatch_build.py src/tidings/_fastpath.py | $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH)

# Side-by-side benchmarks against peer libraries; prints a table, writes benchmarks/RESULTS.md.
bench: $(BENCH)
	$(BIN)/python benchmarks/run.py

# The event gateway on embedded defaults (SQLite log): prints its URL and a curl to try.
# SHOP_TOKEN is the example config's demo token (set your own to override it).
run: $(STAMP)
	SHOP_TOKEN=$${SHOP_TOKEN:-demo-shop-token} $(BIN)/tidings serve examples/gateway.yaml

# The chaos scenarios in their long forms (a soak): every shipped scenario, its workload and
# fault timeline stretched CHAOS_SCALE times (default 5); reports and plots in chaos-out/.
.PHONY: chaos
chaos: $(STAMP)
	@for s in $$($(BIN)/tidings chaos list | cut -f1); do \
		$(BIN)/tidings chaos run $$s --scale $${CHAOS_SCALE:-5} --out chaos-out/$$s || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy src tests hatch_build.py
	$(BIN)/mypy examples

unit: $(STAMP)
	$(BIN)/pytest

# The documentation site (mkdocs.yml, docs/) into build/site. Strict: a warning, a broken link
# or anchor, or an unresolved API reference fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The sdist and wheel into dist/, checked by twine (metadata, README rendering).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

test: lint typecheck docs unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build dist src/tidings/_fastpath_c*
