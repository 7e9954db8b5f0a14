#!/usr/bin/env bash
# Installs what syncs' tests, demo and packages need on a fresh Debian
# machine: redis-server, Python build/test tools, the Debian packaging tools,
# and FerretDB v1 (a real MongoDB-wire server on SQLite) built from its Go
# module.
#
#   scripts/install-deps.sh            # everything
#   scripts/install-deps.sh --no-ferretdb
set -euo pipefail

FERRETDB_VERSION=v1.24.2
want_ferret=1
[[ "${1:-}" == "--no-ferretdb" ]] && want_ferret=0

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if ! command -v redis-server >/dev/null || ! command -v cc >/dev/null \
    || ! pkg-config --exists libbson-1.0 2>/dev/null || ! command -v systemd-analyze >/dev/null \
    || ! command -v openssl >/dev/null || ! command -v nats-server >/dev/null \
    || ! command -v lintian >/dev/null || ! command -v help2man >/dev/null || ! command -v patchelf >/dev/null; then
    as_root apt-get update -qq
    # systemd: only for `systemd-analyze verify` of the shipped units.
    # openssl: test_security.py makes its certificates with the CLI.
    # nats-server: the NATS JetStream transport's tests (test_nats.py).
    # dpkg-dev, help2man, patchelf: scripts/package.sh (the .debs, their man
    # pages, libintc's SONAME); lintian checks the .debs (test_packages.py).
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        redis-server redis-tools build-essential pkg-config libbson-dev systemd openssl nats-server \
        dpkg-dev help2man patchelf lintian >/dev/null
fi

# nats-py: test_nats_format.py publishes hand-made messages and reads the KV bucket.
python3 -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" "pytest>=7" "pymongo>=4" "redis>=5" "mypy>=1.8" "matplotlib>=3.7" "nats-py>=2.6,<3"

if ! command -v cbindgen >/dev/null; then
    cargo install -q --locked cbindgen@0.29.4
fi

if [[ $want_ferret == 1 ]] && ! command -v ferretdb >/dev/null; then
    # `go install` of FerretDB leaves its version file empty and the binary
    # refuses to start, so build from a copy of the module with the file set.
    command -v go >/dev/null || { echo "Go is needed to build FerretDB" >&2; exit 1; }
    work=$(mktemp -d)
    (cd "$work" && go mod init tmp >/dev/null 2>&1 && go mod download -json "github.com/FerretDB/FerretDB@${FERRETDB_VERSION}" >/dev/null)
    src=$(cd "$work" && go mod download -json "github.com/FerretDB/FerretDB@${FERRETDB_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    cp -r "$src" "$work/ferretdb" && chmod -R u+w "$work/ferretdb"
    echo "$FERRETDB_VERSION" > "$work/ferretdb/build/version/version.txt"
    (cd "$work/ferretdb" && go build -o "$work/ferretdb.bin" ./cmd/ferretdb)
    as_root install -m 0755 "$work/ferretdb.bin" /usr/local/bin/ferretdb
    rm -rf "$work"
fi
echo "dependencies installed"
