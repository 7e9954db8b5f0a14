#!/bin/sh
# Regenerates bindings/c/include/intc_cli.h from the Rust sources with
# cbindgen. Run from anywhere; `--check` fails when the committed header is
# stale (for CI).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=bindings/c/include/intc_cli.h
if [ "${1:-}" = "--check" ]; then
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    cbindgen --config bindings/c/cbindgen.toml --crate intc --output "$tmp" --quiet
    if ! diff -u "$out" "$tmp"; then
        echo "$out is stale: run bindings/c/gen-header.sh" >&2
        exit 1
    fi
    echo "$out is up to date"
else
    cbindgen --config bindings/c/cbindgen.toml --crate intc --output "$out" --quiet
    echo "wrote $out"
fi
