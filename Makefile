# Every target bootstraps .venv itself: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test chromium bench faults lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nudge demo

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# Browser tests drive Debian's chromium through Playwright's executable_path (never `playwright install`):
# install it only when missing (NUDGE_CHROMIUM names another binary), and say what to install if that fails.
chromium:
	@command -v "$${NUDGE_CHROMIUM:-chromium}" >/dev/null || { \
		echo "chromium missing: installing Debian's chromium"; sudo=$$([ "$$(id -u)" = 0 ] || command -v sudo); \
		$$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; \
		command -v "$${NUDGE_CHROMIUM:-chromium}" >/dev/null || { echo "make chromium: '$${NUDGE_CHROMIUM:-chromium}' not found" \
			"(NUDGE_CHROMIUM overrides). Install Debian's: apt-get install chromium fonts-dejavu-core" >&2; exit 1; }; }

bench: $(STAMP)
	$(BIN)/nudge bench --events 100000 --runs 3 --json
	$(BIN)/nudge bench --decision --rate 500 --seconds 10 --runs 3 --json
	$(BIN)/nudge bench --e2e --clients 500 --rate 500 --seconds 10 --runs 3 --json
	$(BIN)/nudge bench --broker --rate 1000 --seconds 3 --runs 3 --json

# Every fault at full size (CI runs the same faults at a reduced size in tests/integration/test_faults.py).
faults: $(STAMP)
	$(BIN)/nudge faults --size 20000

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
