# prapi: see README.md. `make test` is the test command CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: test lint unit build bench
test: lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

# Benchmarks, bounded in time (PRAPI_BENCH_SECONDS per round); figures are ratios against a
# baseline measured in the same run. See docs/development.md.
bench:
	$(CARGO) bench -p prapi-dataplane --bench serve

.PHONY: bench-updater
# Updater throughput (one bounded run): in-memory 5 ms/call vs theory, naive writer, dynalite when
# the test environment is up (source target/testenv/env first).
bench-updater:
	$(CARGO) bench -p prapi-dataplane --bench updater
