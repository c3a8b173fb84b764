# Cistern — `make demo` runs the demo, `make test` runs the tests; both set themselves up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SERVER_PACKAGES := mosquitto mosquitto-clients influxdb victoria-metrics
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-unit bench lint system venv clean

demo: venv
	@$(MAKE) --no-print-directory system || echo "cistern: could not install the servers; the demo uses its fallbacks"
	$(VENV)/bin/cistern demo

test: system venv lint
	$(PY) -m pytest -q

test-unit: venv
	$(PY) -m pytest -q tests/unit

bench: system venv
	$(PY) bench/ingest.py
	$(PY) bench/detect.py
	$(PY) bench/simulate.py

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Debian/Ubuntu packages: the real broker and databases the tests run against, and Python's venv module.
system:
	@missing=""; \
	for b in mosquitto:mosquitto mosquitto_pub:mosquitto-clients influxd:influxdb victoria-metrics:victoria-metrics; do \
	  command -v $${b%%:*} >/dev/null 2>&1 || [ -x /usr/sbin/$${b%%:*} ] || missing="$$missing $${b##*:}"; \
	done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV)/.installed

clean:
	rm -rf $(VENV) .cistern .pytest_cache build *.egg-info
