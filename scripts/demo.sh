#!/usr/bin/env bash
# The syncs demo, end to end on one machine:
#   builds the daemons and the Python library, starts a target Redis (when
#   redis-server is installed or installable; otherwise the built-in `file`
#   target stands in), sync_server and proxy, runs the seed's Python example,
#   and shows what arrived.
#
#   SYNCS_DEMO_TARGET=file scripts/demo.sh   # use the file target even where Redis exists
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=${DEMO_DIR:-/tmp/syncs-demo}
SOCK=/tmp/us1                      # the seed's example hard-codes it

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# A free port below the ephemeral range: the proxy's retries cannot take it.
free_port() { python3 -c '
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
while True:
    p = random.randrange(10000, max(low, 10100))
    try:
        socket.socket().bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'; }

say "setting up (build tools, Python packages)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "demo: the intc wheel needs Python 3.10 or later; python3 is $(python3 -V 2>&1)" >&2
    exit 1
}
python3 -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" "pymongo>=4" "redis>=5"
if ! command -v redis-server >/dev/null && [[ ${SYNCS_DEMO_TARGET:-} != file ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
            || echo "redis-server could not be installed; the demo uses the file target"
    elif sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then
        (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
            || echo "redis-server could not be installed; the demo uses the file target"
    fi
fi

say "building sync_server, proxy and the Python library"
cargo build --release -q -p syncs-daemons
python3 -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings/python

rm -rf "$DEMO" && mkdir -p "$DEMO"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

AUDIT=$DEMO/applied.jsonl
{
    echo "# Demo rules (written by scripts/demo.sh). Reference: docs/rules.md"
    echo "target audit = file \"$AUDIT\""
} > "$DEMO/demo.sync"
if command -v redis-server >/dev/null && [[ ${SYNCS_DEMO_TARGET:-} != file ]]; then
    RPORT=$(free_port)
    redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$DEMO" \
        --logfile "$DEMO/redis.log" & pids+=($!)
    echo "target replica = redis \"redis://127.0.0.1:$RPORT\"" >> "$DEMO/demo.sync"
    echo "default redis -> replica, audit    # fan-out: the target Redis and the audit file" >> "$DEMO/demo.sync"
else
    RPORT=
    echo "default redis -> audit" >> "$DEMO/demo.sync"
fi
echo "default mongo -> audit" >> "$DEMO/demo.sync"

SPORT=$(free_port); MPORT=$(free_port)
cat > "$DEMO/rmt.ini" <<INI
[server]
listen = 127.0.0.1:$SPORT
rules = demo.sync
dead_letter = dead-letter.jsonl
metrics = 127.0.0.1:$MPORT
INI

say "rules in force ($DEMO/demo.sync)"
cat "$DEMO/demo.sync"
target/release/syncs-check "$DEMO/demo.sync"

say "starting the proxy first (the server is not up yet: it queues and retries)"
rm -f "$SOCK"
target/release/proxy -u "$SOCK" -d "127.0.0.1:$SPORT" --spool-dir "$DEMO/spool" --log-level warn 2>"$DEMO/proxy.log" & pids+=($!)
for _ in $(seq 100); do [[ -S $SOCK ]] && break; sleep 0.05; done

say "running the seed's Python example (redis_one, redis_many, mongo_exec)"
sed -n '/^import intc/,$p' bindings/python/tests/seed_example.py
python3 bindings/python/tests/seed_example.py

say "starting sync_server (configs like configs/rmt.ini)"
target/release/sync_server "$DEMO/rmt.ini" 2>"$DEMO/server.log" & pids+=($!)

for _ in $(seq 200); do [[ -f $AUDIT ]] && [[ $(wc -l < "$AUDIT") -ge 3 ]] && break; sleep 0.05; done

say "what arrived"
if [[ -n $RPORT ]]; then
    python3 - "$RPORT" <<'PY'
import sys, redis
port = int(sys.argv[1])
for db, key in ((1, "a"), (2, "cool"), (2, "awesome")):
    v = redis.Redis(port=port, db=db).get(key)
    print(f"redis db {db}  GET {key:8} -> {v.decode() if v else v}")
PY
fi
echo "audit file $AUDIT:"
cat "$AUDIT"

say "server metrics (http://127.0.0.1:$MPORT/metrics)"
curl -s "http://127.0.0.1:$MPORT/metrics" 2>/dev/null | grep -E '^syncs_' \
    || python3 -c "import urllib.request,sys; print('\n'.join(l for l in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines() if l.startswith('syncs_')))" "http://127.0.0.1:$MPORT/metrics"
say "done; logs and files are in $DEMO"
