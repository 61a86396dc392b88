# The two Quick start commands (`make run`, `make test`) set everything up themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every dependency (and pip, setuptools) pinned with its hashes; `make lock` refreshes them.
LOCK := requirements/dev.txt
RUNTIME_LOCK := requirements/runtime.txt
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

.PHONY: run reset test lint check clean bench bench-quick reliability reliability-small lock

# Hash-checked installs only; then the project itself, without dependencies and with the
# locked setuptools (no build isolation: nothing is fetched unpinned).
$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The newest versions pyproject.toml allows: the dev lock, then the runtime lock (the image's)
# from the same pins.
lock: $(STAMP)
	$(PIP_COMPILE) --upgrade --extra dev -o $(LOCK) pyproject.toml requirements/build.in
	cp $(LOCK) $(RUNTIME_LOCK)
	$(PIP_COMPILE) -o $(RUNTIME_LOCK) pyproject.toml requirements/build.in

run: $(STAMP)
	$(BIN)/sagebridge run

# Start the sandbox afresh: the bridge's data and the sandbox's records (asks first).
reset: $(STAMP)
	$(BIN)/sagebridge reset

# Two processes, a test file each at a time (module fixtures start servers once per file).
PYTEST_PARALLEL ?= -n 2 --dist loadfile

test: $(STAMP)
	$(BIN)/pytest -q $(PYTEST_PARALLEL); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy app sandbox tests bench reliability

reliability: $(STAMP)
	$(BIN)/python -m reliability.run --json reliability/results/latest.json

reliability-small: $(STAMP)
	$(BIN)/pytest -q -m scenarios tests/reliability

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache sagebridge.db .sagebridge
