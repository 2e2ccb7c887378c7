# The README's commands. `make demo` and `make test` each work on a fresh Linux machine
# with Python 3.10+ (they create the virtual environment they need).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# tensorflow-cpu is the small CPU-only build (x86-64); elsewhere the regular package.
TF_PKG ?= $(shell [ "$$(uname -m)" = x86_64 ] && echo tensorflow-cpu || echo tensorflow)
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# the study itself; notebook 06's six trainings are `make ablation`, notebook 07's three `make teach`
ABLATION := notebooks/06_ablation.ipynb
TEACH := notebooks/07_teach_your_tags.ipynb
DEMO_NOTEBOOKS := $(filter-out $(ABLATION) $(TEACH),$(NOTEBOOKS))
DEMO_HOME ?= $(CURDIR)/data
TEST_HOME ?= $(CURDIR)/build/test-home

.PHONY: setup dev demo ablation teach test notebooks lint clean wheels

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TF_PKG)>=2.16" "jax[cpu]>=0.4.30" -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

# A WD-tagger client (dghs-imgutils) in its own environment: the test that reads our export
# with it. Kept apart because it pins numpy<2; never a runtime requirement.
WD_CLIENT := $(VENV)-wd-client
$(WD_CLIENT)/.installed: requirements-wd-client.txt
	$(PYTHON) -m venv $(WD_CLIENT)
	$(WD_CLIENT)/bin/python -m pip install -q --upgrade pip
	$(WD_CLIENT)/bin/python -m pip install -q -r requirements-wd-client.txt
	touch $@

# Keras on JAX with no TensorFlow at all: the environment a JAX-only accelerator (a Colab TPU,
# a GPU machine with JAX) gives. `make test` runs the notebooks 01-05, the training tests marked
# `backends` and the whole chain (tests/test_backends.py) there.
JAX_VENV := $(VENV)-jax
$(JAX_VENV)/.installed: requirements-jax.txt requirements.txt pyproject.toml
	$(PYTHON) -m venv $(JAX_VENV)
	$(JAX_VENV)/bin/python -m pip install -q --upgrade pip
	$(JAX_VENV)/bin/python -m pip install -q -r requirements-jax.txt
	$(JAX_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

## wheels: what a machine with JAX and no package index lacks, as wheels in build/wheels for
## benchmarks/device_check.sh, which installs them all with --no-deps: the package, keras and
## the other requirements with their dependencies (binary ones for WHEELS_PYTHON, default this
## Python), less TensorBoard (it serves TensorFlow only) and what JAX brings along there (NumPy,
## SciPy, ml_dtypes, opt_einsum; Pillow and PyArrow are expected too). About 50 MB.
WHEELS_PYTHON ?= $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
ON_A_JAX_MACHINE := numpy scipy ml_dtypes opt_einsum pillow pyarrow
wheels: $(VENV)/.installed
	rm -rf build/wheels && mkdir -p build/wheels
	$(BIN)/python -m pip wheel -q --no-deps -w build/wheels .
	grep -v -E '^(tensorboard|pyarrow)' requirements.txt | sed 's/#.*//' | grep . > build/wheels.txt
	$(BIN)/python -m pip download -q --only-binary=:all: --python-version $(WHEELS_PYTHON) \
		--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d build/wheels -r build/wheels.txt
	cd build/wheels && for p in $(ON_A_JAX_MACHINE); do rm -f $$p-*.whl; done
	du -sh build/wheels

setup: $(VENV)/.installed
dev: $(VENV)/.dev

## demo: generate the sample, run notebooks 01-05 on the `sample` profile
demo: $(VENV)/.dev
	ANIMETAG_WORKSPACE=$(DEMO_HOME) ANIMETAG_PROFILE=sample $(BIN)/python scripts/run_notebooks.py \
		--out $(DEMO_HOME)/executed $(DEMO_NOTEBOOKS)
	@echo
	@echo "Executed notebooks: $(DEMO_HOME)/executed/"
	@echo "Figures:            $(DEMO_HOME)/figures/sample/"
	@echo "Subset and run:     $(DEMO_HOME)/subsets/sample/  $(DEMO_HOME)/runs/sample/"

## ablation: notebook 06 on the sample (six trainings; finished ones are read back)
ablation: $(VENV)/.dev
	ANIMETAG_WORKSPACE=$(DEMO_HOME) ANIMETAG_PROFILE=sample $(BIN)/python scripts/run_notebooks.py \
		--out $(DEMO_HOME)/executed $(ABLATION)

## teach: notebook 07 on the sample (a parent, its fine-tuning with the characters, and from scratch)
teach: $(VENV)/.dev
	ANIMETAG_WORKSPACE=$(DEMO_HOME) ANIMETAG_PROFILE=sample $(BIN)/python scripts/run_notebooks.py \
		--out $(DEMO_HOME)/executed $(TEACH)

## test: the unit tests on two pytest-xdist workers (a module's tests on one worker, so each
## module's fixtures are built once; the scopes with the most slow work first, as tests/conftest.py
## orders them, not xdist's order by number of tests, so that both workers end together) and,
## beside them, one after another: without TensorFlow (so under JAX, with nothing set) the
## notebooks 01-05 under nbmake, then with TensorFlow 03, 05, 06 and 07 (see TF_NOTEBOOKS below;
## 03 builds the subset 01 builds; tiny profile, one epoch per training, bootstrap at 200
## resamples, and notebook 06's keras.applications variant a plain ResNet: the unit tests train
## those backbones), then under JAX the tests marked `backends` (their reports follow the
## tests', and they run at a lower priority: the unit tests come first, and the rest fills what
## they leave idle); the environments are installed side by side
JAX_NOTEBOOKS := $(DEMO_NOTEBOOKS)
# with TensorFlow: the training notebooks 03, 06 and 07, and 05 (its ONNX export needs TensorFlow);
# 03 by the demo's runner with --strict (no TensorFlow log line or Path repr in any output), the
# others under nbmake. 04 runs under JAX only: it trains nothing the unit tests do not train
# under TensorFlow.
TF_STRICT := notebooks/03_train_resnet_se.ipynb
TF_NOTEBOOKS := $(filter-out notebooks/01% notebooks/02% notebooks/03% notebooks/04%,$(NOTEBOOKS))
# what tests/conftest.py sets for the unit tests: tiny models on shared cores compile XLA without
# its backend optimizations and run TensorFlow's ops on one thread each
TINY_MODELS_ENV := XLA_FLAGS=--xla_backend_optimization_level=0 TF_NUM_INTRAOP_THREADS=1
NB_ENV := ANIMETAG_PROFILE=tiny ANIMETAG_BOOTSTRAP=200 ANIMETAG_EPOCHS=1 ANIMETAG_BACKBONE=resnet $(TINY_MODELS_ENV)
# JAX's compilation cache for that pass: a model compiled once is read back by the next training
# of the same model (the resume test's four, notebook 04's second run)
JAX_CACHE_ENV := JAX_COMPILATION_CACHE_DIR=$(TEST_HOME)-jax-cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
test:
	$(MAKE) --no-print-directory -j3 $(VENV)/.dev $(WD_CLIENT)/.installed $(JAX_VENV)/.installed
	rm -rf $(TEST_HOME) $(TEST_HOME)-jax $(TEST_HOME)-jax-cache && mkdir -p $(TEST_HOME) $(TEST_HOME)-jax
	( echo "without TensorFlow (under JAX):"; \
	  $(JAX_CACHE_ENV) ANIMETAG_WORKSPACE=$(TEST_HOME)-jax $(NB_ENV) nice -n 10 $(JAX_VENV)/bin/python -m pytest \
		-p no:cacheprovider --nbmake --nbmake-timeout=900 $(JAX_NOTEBOOKS); a=$$?; \
	  echo; echo "with TensorFlow:"; \
	  ANIMETAG_WORKSPACE=$(TEST_HOME) $(NB_ENV) TF_CPP_MIN_LOG_LEVEL=2 nice -n 10 $(BIN)/python scripts/run_notebooks.py \
		--strict --timeout 900 --out $(TEST_HOME)/executed $(TF_STRICT) && \
	  ANIMETAG_WORKSPACE=$(TEST_HOME) $(NB_ENV) ANIMETAG_OPEN_APP=yes nice -n 10 $(BIN)/python -m pytest \
		-p no:cacheprovider --nbmake --nbmake-timeout=900 $(TF_NOTEBOOKS); b=$$?; \
	  echo; echo "the tests marked backends, under JAX without TensorFlow:"; \
	  $(JAX_CACHE_ENV) KERAS_BACKEND=jax nice -n 10 $(JAX_VENV)/bin/python -m pytest -p no:cacheprovider -m backends tests/test_train.py; c=$$?; \
	  test $$a$$b$$c = 000 ) > $(TEST_HOME).notebooks.log 2>&1 & nb=$$!; \
	ANIMETAG_WD_CLIENT_PYTHON=$(WD_CLIENT)/bin/python ANIMETAG_JAX_PYTHON=$(JAX_VENV)/bin/python \
		$(BIN)/python -m pytest -n 2 --dist loadscope --no-loadscope-reorder -m "not notebook_pass" tests; t=$$?; \
	wait $$nb; n=$$?; echo; echo "notebooks (nbmake) and the JAX pass:"; cat $(TEST_HOME).notebooks.log; \
	test $$t -eq 0 && test $$n -eq 0

## notebooks: regenerate every .ipynb from its jupytext .py source
notebooks: $(VENV)/.dev
	for f in notebooks/[0-9]*.py; do $(BIN)/jupytext --quiet --to ipynb "$$f"; done

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests scripts

clean:
	rm -rf build data/executed data/figures
