# Two entry points a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Azurite (the Azure Storage emulator) for the storage-ingest tests, from the npm registry.
AZURITE := .azurite/node_modules/.bin/azurite-blob
# Microsoft's Kusto language service (parser and semantic analyser) for the KQL check, from the npm registry.
KUSTO_VERSION := 12.4.1
KUSTO := .kusto/node_modules/@kusto/language-service-next/package.json
# HashiCorp's hclwrite formatter (what `terraform fmt` runs), for the check of the Terraform output.
HCLTOOLS_VERSION := 0.21.0
HCLTOOLS := .hcltools/node_modules/@cdktf/hcl-tools/package.json
# Debian's headless Chromium and its WebDriver for the report's browser test (apt, as root in CI).
CHROMEDRIVER := /usr/bin/chromedriver

.PHONY: demo test bench bench-compare bench-30day bench-cardinality docs docs-examples screenshots clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/egresslens demo --out demo-output

$(AZURITE):
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --no-save --no-audit --no-fund --silent --prefix .azurite azurite@3; \
	else echo "npm not found: the storage tests will be skipped"; fi

$(KUSTO):
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --no-save --no-audit --no-fund --silent --prefix .kusto @kusto/language-service-next@$(KUSTO_VERSION); \
	else echo "npm not found: the KQL parser check will be skipped (it fails under CI)"; fi

$(HCLTOOLS):
	@if command -v npm >/dev/null 2>&1; then \
	  npm install --no-save --no-audit --no-fund --silent --prefix .hcltools @cdktf/hcl-tools@$(HCLTOOLS_VERSION); \
	else echo "npm not found: the Terraform format check will be skipped (it fails under CI)"; fi

$(CHROMEDRIVER):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	  || echo "could not install chromium: the browser test will be skipped"; \
	else echo "chromium missing and apt-get unavailable (or not root): the browser test will be skipped"; fi

test: $(STAMP) $(AZURITE) $(KUSTO) $(HCLTOOLS) $(CHROMEDRIVER)
	$(BIN)/python -m pytest -q

screenshots: $(STAMP) $(CHROMEDRIVER)
	$(BIN)/python docs/images/screenshots.py

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-examples: $(STAMP)
	$(BIN)/python docs/examples/generate.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py --format structured
	$(BIN)/python benchmarks/bench_ingest.py --format legacy
	$(BIN)/python benchmarks/bench_snat_dns.py
	$(BIN)/python benchmarks/bench_recommend.py

# Ingest side by side with bare DuckDB SQL and pandas on the same simulated records (ROWS: 1M, 10M, 100M;
# REPEAT: runs per contender, the fastest kept).
ROWS ?= 1M
REPEAT ?= 1
bench-compare: $(STAMP)
	$(BIN)/python benchmarks/compare.py --rows $(ROWS) --repeat $(REPEAT)

# Peak memory of every command on a day of NAMES distinct names (2 x NAMES records a day, two days), each
# measured from outside its process; the table goes to bench-output/cardinality-NAMES.json.
NAMES ?= 1M
bench-cardinality: $(STAMP)
	$(BIN)/python benchmarks/bench_cardinality.py --names $(NAMES)

# recommend, snat and dns over a 30-day store: rollups (as held in real use), raw rows, and wide rollups;
# the stores are built once into .bench-cache/30day (about 4 minutes), the table goes to bench-output/30day.json.
bench-30day: $(STAMP)
	$(BIN)/python benchmarks/bench_30day.py

clean:
	rm -rf $(VENV) .azurite .kusto .hcltools demo-output egresslens.duckdb site .bench-cache
