# Everything a fresh machine needs comes from here and pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG := config/cobranca.yaml
MIN_VENV  := .venv-min
MIN_STAMP := $(MIN_VENV)/.installed-stamp

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: build the demo Protheus database and run every layout once (letters in var/outbox)
demo: $(STAMP)
	$(BIN)/cobranca demo-db --config $(CONFIG)
	@# --ignore-calendar: the demo runs at any hour; the daemon keeps to business days 08:00-18:00
	$(BIN)/cobranca run --config $(CONFIG) --log-level WARNING --ignore-calendar
	@echo "letters written to var/outbox/ ; history in var/history.db"

## demo-reset: forget the demo's history and letters (the next `make demo` sends again)
demo-reset:
	rm -rf var/

## test: lint, the whole suite, and the core of it on the lowest dependency versions we allow
test: $(STAMP) $(MIN_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check daemon tests
	$(BIN)/pytest
	$(MIN_VENV)/bin/pytest -q -p no:cacheprovider tests/test_daily_run.py tests/test_config.py \
		tests/test_smtp_transport.py tests/test_scheduler.py tests/test_audit.py tests/test_pdf.py \
		tests/test_letter_content.py tests/test_calendar.py tests/test_businessdays.py \
		tests/test_batches.py

$(MIN_STAMP): pyproject.toml .ci/constraints-min.txt
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install --quiet --upgrade pip
	$(MIN_VENV)/bin/pip install --quiet -c .ci/constraints-min.txt -e '.[test]'
	touch $(MIN_STAMP)

.PHONY: demo demo-reset test

## reference: rewrite the README's config reference from the schema
reference: $(STAMP)
	$(BIN)/python -c "import re, pathlib, subprocess; p = pathlib.Path('README.md'); ref = subprocess.run(['$(BIN)/cobranca', 'config', 'reference'], capture_output=True, text=True, check=True).stdout; s = p.read_text(); a = '<!-- config-reference:start -->\n'; b = '<!-- config-reference:end -->'; p.write_text(s[:s.index(a) + len(a)] + ref + s[s.index(b):])"

.PHONY: reference
