#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the end-to-end
# tests (real redis-server and FerretDB, real daemons, the C and Python
# libraries as users build them).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step's header says when it started (UTC), so that a slow run (CI runs
# .ci/run, then this) shows where its time went.
step() { echo "== $* [$(date -u +%T)]"; }

step "build (release)"
cargo build --release --workspace --exclude intc-python
step "Rust tests"
cargo test --release --workspace --exclude intc-python
step "Python library (pip install ./bindings/python)"
python3 -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings/python
step "rules shipped in rules/"
target/release/syncs-check rules/
target/release/syncs-check rules/examples/
# Speed lives in the benchmark suite, never in tests: here it only has to run.
step "benchmark suite, smoke mode (figures: docs/benchmarks.md)"
python3 tests/bench/suite.py --smoke --out target/bench-smoke
# Two pytest runs: each suite has its own conftest.py (imported as
# `conftest`), and one process can hold only one of them.
step "end-to-end tests (pytest, real redis-server and FerretDB)"
python3 -m pytest -q tests "$@"
step "binding tests (pytest)"
python3 -m pytest -q bindings/python/tests bindings/c/tests "$@"
