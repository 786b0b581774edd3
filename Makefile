# Every target builds or refreshes the virtualenv itself, from the pinned lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV_VERSION := 0.13.9

.PHONY: venv gen check-gen lint fmt test test-fast fuzz run bench bench-quick browser clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync -q --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

## Regenerate the Python code (libs/contracts) and the TypeScript client from proto/.
gen: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python scripts/gen_contracts.py
	cd clients/typescript && npm ci --silent --no-audit --no-fund && npm run --silent generate

## Fail when the committed generated code differs from what proto/ generates.
check-gen: $(STAMP)
	@PATH=$(abspath $(BIN)):$$PATH $(BIN)/python scripts/gen_contracts.py --check

lint: $(STAMP)
	cd proto && ../$(BIN)/buf format --diff --exit-code
	$(BIN)/buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy libs/platform/trinity_platform libs/process_model/trinity_process_model services/*/trinity_*
	find deploy -type f -name 'Dockerfile*' ! -name '*.dockerignore' -exec $(BIN)/hadolint --config deploy/docker/hadolint.yaml {} +
	@if git rev-parse --verify --quiet refs/heads/main >/dev/null; then \
		echo "$(BIN)/buf breaking --against '.git#branch=main'"; $(BIN)/buf breaking --against '.git#branch=main'; \
	else echo "buf breaking: skipped (this clone has no main branch to compare against)"; fi

fmt: $(STAMP)
	cd proto && ../$(BIN)/buf format -w
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Debian's Chromium for the web console's browser tests: installed with apt-get when
## missing and we are root; otherwise (or if the install fails) those tests skip and say why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the console's browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "browser: installing chromium failed; the console's browser tests will skip"; \
	else echo "browser: /usr/bin/chromium is missing and we are not root; the console's browser tests will skip"; fi

## Everything CI runs: contract checks, lint, and the whole test suite.
test: $(STAMP) check-gen lint browser
	$(BIN)/python -m pytest -q

## Only the tests, without lint and drift checks.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -x

## The fuzz suite of every RPC, long: TRINITY_FUZZ_EXAMPLES per RPC and attack (make test runs 10).
fuzz: $(STAMP)
	TRINITY_FUZZ_EXAMPLES=$${TRINITY_FUZZ_EXAMPLES:-400} $(BIN)/python -m pytest -q tests/fuzz --timeout=0

## Start NATS (when none answers), the four services, an executor and the web console on SQLite.
## Options through ARGS: make run ARGS="--executors 2 --data-dir /tmp/x --no-examples"
run: $(STAMP)
	$(BIN)/python -m trinity_cli.devrun $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run

bench-quick: $(STAMP)
	$(BIN)/python -m tests.bench.run --quick

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
