# The platform's commands. Everything the stack downloads, stores and logs lives under var/.
#   make demo   bring the stack up, simulate two hospitals, stream into the warehouse, show the result
#   make test   install, start the stack, run every test (unit, contract, integration)
SHELL := /bin/bash
VENV  := var/venv
PY    := $(VENV)/bin/python
HIP   := $(VENV)/bin/hip
PYTEST := $(VENV)/bin/pytest

.PHONY: help install up down status test test-unit demo demo-reset bench scale lint clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## Install Debian packages, Kafka/Connect/Debezium/registry jars and the Python venv (idempotent)
	@bash deploy/install.sh

up: install ## Start the local stack and wait until every part is healthy (a second run is harmless)
	@bash deploy/up.sh

down: ## Stop every process the stack started (by recorded process ids)
	@bash deploy/down.sh

status: ## Show the stack's processes, then the health of each service
	@bash deploy/status.sh
	@if [ -x $(HIP) ]; then $(HIP) stack health || true; fi

test-unit: install ## The pure core only: no services, seconds
	$(PYTEST) -q -m "not integration" tests/unit

test: up ## Everything, against the real stack
	$(PYTEST) -q -ra tests

demo: up ## The main job: two simulated hospitals streamed into the warehouse, then a report
	@bash deploy/demo.sh

demo-reset: ## Forget the demo's connectors, topics, warehouse rows and simulated hospitals
	@bash deploy/reset-demo.sh

bench: up ## Throughput and memory benchmarks, printed as tables (not part of make test; resets the demo data)
	@bash deploy/bench.sh

scale: up ## Onboard a simulated fleet of all 66 hospitals with one apply and report
	@bash deploy/scale.sh

lint: install
	$(VENV)/bin/mypy hip streams/core

clean: down ## Stop the stack and delete its data and logs (downloads are kept)
	rm -rf var/data var/logs var/run var/conf
