# simsearch — set-up, tests, lint, benchmarks. Every target installs what it needs.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch from the local wheel cache on this kind of machine; keep this pin (see README).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.simsearch-installed

.PHONY: setup tools test test-fast test-images test-torch-images images lint format config-docs bench bench-quality bench-throughput demo down clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[embedder,shard,indexer,router,dev]'
	touch $@

# helm, kubectl, hadolint into .tools/bin and kubernetes-validate into the venv (pinned in
# the script; a no-op once its stamps are there).
tools: setup
	VENV=$(VENV) bash scripts/install-tools.sh
	VENV=$(VENV) bash scripts/install-browser.sh

test: setup tools
	$(PY) -m pytest -q -p no:cacheprovider

# The container images: built by scripts/build-images.sh (buildah, no daemon; installs buildah,
# podman and debootstrap from Debian if missing, so it needs root as CI has), then router and
# shard images run under the chart's security settings (tests/images). A step of its own in
# .ci/run: the first build takes ~4 minutes, more than make test's budget leaves.
test-images: setup tools
	$(PY) -m pytest -q -rP -p no:cacheprovider -m images tests/images

# The embedder and indexer images too (tests/images/test_torch_images.py): torch from
# TORCH_WHEELS (a wheel directory the script fills with this machine's pip) unless
# TORCH_INDEX_URL is given; ~6 GB each with the CUDA torch pinned here, so not in CI.
test-torch-images: setup tools
	$(PY) -m pytest -q -rP -p no:cacheprovider -m torch_images tests/images

# All four role images (torch from the CPU index; TORCH_WHEELS=DIR for a wheel directory).
images:
	TARGETS="router shard embedder indexer" bash scripts/build-images.sh

test-fast: setup tools
	$(PY) -m pytest -q -m "not integration"

# mypy twice: strict over services/ (pyproject.toml), then the tests with their own config
# (tests/mypy.ini: the pydantic plugin, untyped test functions allowed but checked).
lint: setup
	$(VENV)/bin/ruff check services tests scripts
	$(VENV)/bin/ruff format --check services tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --config-file tests/mypy.ini

format: setup
	$(VENV)/bin/ruff format services tests scripts
	$(VENV)/bin/ruff check --fix services tests scripts

# docs/configuration.md from the settings classes (tests/unit/test_config_docs.py fails
# when the committed page differs).
config-docs: setup
	$(PY) scripts/gen_config_docs.py

# Retrieval quality on labelled photos (needs ../shared/datasets, research use only).
bench-quality: setup
	$(PY) scripts/bench/quality.py --out docs/quality.json --plot docs/quality.png

# Embedder throughput: raw batched model vs HTTP with 8 concurrent clients.
bench-throughput: setup
	$(PY) scripts/bench/embed_throughput.py --out docs/embed_throughput.json

bench: bench-quality bench-throughput

# The whole cluster as local processes on the bundled photos: embedder, index build,
# 2 shards, router. Prints the URL; `make down` (or `.venv/bin/simsearch down`) stops it.
demo: setup
	$(VENV)/bin/simsearch up --shards 2
	@echo "try: curl -F file=@samples/flowers/images/daisy/100080576_f52e8ee070_n.jpg http://127.0.0.1:8000/search/image"

down: setup
	$(VENV)/bin/simsearch down

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
