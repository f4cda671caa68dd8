# Everything installs itself into .venv: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU wheel of this exact version is installed first so that pip never pulls the CUDA build of torch;
# on a GPU machine, use e.g. `make TORCH_SPEC="torch" ...`.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-quick test-chaos test-array-expr test-lowest test-slow docs lint format bench-peers bench-threads bench-memory bench-plan bench-scaling bench-first-call clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]" -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --out demo-output

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy seamless_dask tests/typing
	$(PY) -m pytest
	$(MAKE) test-array-expr

# A contributor's quick loop: no process clusters, TLS or S3 servers (CI runs them, in `make test`).
test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu and not integration"

# The cluster's faults against real processes (about 7 minutes; CI runs it): a worker SIGKILLed at a
# dozen moments of a job, a worker cut off or slowed on a network of namespaces, a worker lost in a
# plugin's broadcast, every worker lost, the scheduler lost, an object store stopped mid-write; the
# killed and cut-off workers again on dask's array-expr engine.
test-chaos: $(STAMP)
	$(PY) -m pytest -q -s -p no:cacheprovider -m chaos tests
	DASK_ARRAY__QUERY_PLANNING=True $(PY) -m pytest -q -s -p no:cacheprovider -m chaos \
		tests/cluster/test_chaos.py tests/cluster/test_partition.py

# The whole suite again on dask's next array engine (array-expr): tests/test_array_expr.py and docs/guide.md say
# what differs there (odc-stac 0.5.3 does not load on it; the legacy-default check is skipped).
test-array-expr: $(STAMP)
	DASK_ARRAY__QUERY_PLANNING=True $(PY) -m pytest -p no:cacheprovider -q

# The suite on the lowest versions pyproject.toml allows (constraints-lowest.txt), in a venv of its own:
# every declared bound is true (CI runs it after make test).
LOWEST_VENV ?= .venv-lowest
test-lowest: pyproject.toml constraints-lowest.txt
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(LOWEST_VENV)/bin/python -m pip install --quiet -e ".[test]" -c constraints-lowest.txt
	$(LOWEST_VENV)/bin/python -m pip list --format=freeze | grep -i -E '^(dask|distributed|xarray|zarr|numpy|rasterio)=='
	$(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider

# The documentation site (docs/ and the API reference from the docstrings) into site/; any warning fails it.
docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]" -c constraints.txt
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow or not slow" --hypothesis-profile=thorough

# By hand, not in CI: each prints its table for docs/benchmarks.md.
# seamless-seg is one file to copy, not a package: `make bench-peers SEAMLESS_SEG=path/to/seamless_seg.py` adds its row.
bench-peers: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/peers.py $(if $(SEAMLESS_SEG),--seamless-seg $(SEAMLESS_SEG))

bench-threads: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/threads.py --repeats 5

bench-plan: $(STAMP)
	$(PY) benchmarks/plan_scale.py
	$(PY) benchmarks/plan_scale.py --write --sizes 300000 1000000

bench-scaling: $(STAMP)
	$(PY) benchmarks/scaling.py

bench-first-call: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/peers.py --sizes 2048 --models unet --methods bare-first seamless-first seamless --repeats 3

bench-memory: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/memory_scale.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy seamless_dask tests/typing

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) demo-output site .pytest_cache .hypothesis
