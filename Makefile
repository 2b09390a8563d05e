# prapi: see README.md. `make test` is the test command CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

# CI builds everything from scratch once: line tables are enough for backtraces, and full
# debuginfo and incremental caches would cost gigabytes of disk and minutes of linking.
ifeq ($(CI),true)
export CARGO_PROFILE_DEV_DEBUG ?= line-tables-only
export CARGO_INCREMENTAL ?= 0
endif

.PHONY: test lint unit build bench testenv testenv-down kind-up kind-down e2e chart-check

# Lint, then every test (unit and integration) against the test environment
# (e2e/testenv, docs/development.md), which is started first and stopped
# afterwards even when tests fail; then the e2e suite on kind.
test: lint chart-check
	$(CARGO) test --workspace --no-run
	e2e/testenv/with-testenv.sh $(CARGO) test --workspace
	$(MAKE) e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Tests without the environment: integration tests say "skipped: ..." and pass.
unit:
	$(CARGO) test --workspace

# Benchmarks, bounded in time (PRAPI_BENCH_SECONDS per round); figures are ratios against a
# baseline measured in the same run. See docs/development.md.
bench:
	$(CARGO) bench -p prapi-dataplane --bench serve
	$(CARGO) bench -p prapi-dataplane --bench lb
	$(CARGO) bench -p prapi-dataplane --bench batch
	$(CARGO) bench -p prapi-dataplane --bench gzip

.PHONY: bench-latency bench-memory
# Open-loop latency of `prapi products` at 25/50/75 % of its peak (about 2.5 minutes).
bench-latency:
	$(CARGO) bench -p prapi-dataplane --bench latency

# RSS per cached product against the cache's byte accounting, and the budget under a miss storm
# (2 to 10 minutes; about 6 GB of memory at 50k products).
bench-memory:
	$(CARGO) bench -p prapi-dataplane --bench memory

.PHONY: bench-updater
# Updater throughput (one bounded run): in-memory 5 ms/call vs theory, naive writer, dynalite when
# the test environment is up (make testenv).
bench-updater:
	$(CARGO) bench -p prapi-dataplane --bench updater

.PHONY: bench-operator
# Operator throughput (one bounded run, minutes): N MarketGroups to Ready against a baseline that
# server-side applies the same objects, plus the operator's idle and restart writes, on the test
# environment started (and stopped) around it. PRAPI_BENCH_GROUPS=25 for a quick run; see
# docs/performance.md.
bench-operator:
	e2e/testenv/with-testenv.sh $(CARGO) bench -p prapi-operator --bench throughput

# Start (what is not running of) the test environment; writes target/testenv/env.
testenv:
	e2e/testenv/up.sh

testenv-down:
	e2e/testenv/down.sh

# The kind e2e environment (e2e/kind, docs/development.md): a real cluster with Skipper as the
# ingress and the chart installed from locally built images; writes target/kind/env.
kind-up:
	e2e/kind/up.sh

kind-down:
	e2e/kind/down.sh

# The e2e suite (e2e/tests/kind.rs) against kind: up, the suite, down (PRAPI_KEEP_KIND=1 keeps it).
# Built with the same package selection as `make test` (features unify per selection), so after
# `make test`'s build this compiles nothing; the suite uses that build's target/debug/prapi.
e2e:
	$(CARGO) test --workspace --no-run
	e2e/kind/with-kind.sh $(CARGO) test --workspace --test kind -- --test-threads=1

# helm lint and kubeconform over the chart rendered with its default and its e2e values.
chart-check:
	e2e/kind/chart-check.sh
