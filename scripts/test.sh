#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, then the end-to-end
# tests (real redis-server and FerretDB, real daemons, the C and Python
# libraries as users build them).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== build (release)"
cargo build --release --workspace --exclude intc-python
echo "== Rust tests"
cargo test --release --workspace --exclude intc-python
echo "== Python library (pip install ./bindings/python)"
python3 -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings/python
echo "== rules shipped in rules/"
target/release/syncs-check rules/
target/release/syncs-check rules/examples/
# Speed lives in the benchmark suite, never in tests: here it only has to run.
echo "== benchmark suite, smoke mode (figures: docs/benchmarks.md)"
python3 tests/bench/suite.py --smoke --out target/bench-smoke
# Two pytest runs: each suite has its own conftest.py (imported as
# `conftest`), and one process can hold only one of them.
echo "== end-to-end tests (pytest, real redis-server and FerretDB)"
python3 -m pytest -q tests "$@"
echo "== binding tests (pytest)"
python3 -m pytest -q bindings/python/tests bindings/c/tests "$@"
