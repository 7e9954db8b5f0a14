"""Instructions the proxy and the server execute per replicated SET,
counted with valgrind's callgrind (docs/benchmarks.md, session 14).

    python3 tests/bench/instructions.py [--n 200000] [--client py-buffered] [--top 12]

On a shared VM the timings of the same build swing by 10-50 % from one
minute to the next; instruction counts do not, so a change of a few
percent of the relay's work shows here when the throughput rows cannot
resolve it. Runs one row-3 load (the suite's `row_syncs`: N SETs, 16-byte
keys, 64-byte values) with the proxy and the server of the build under
test (SYNCS_BIN_DIR, default target/release) started under callgrind,
then prints each daemon's instructions per SET (start-up and shutdown
included, a few per SET at N = 200,000) and its `--top` functions by
inclusive count per SET. Whole-daemon counts move by ~100 per SET between
runs with how much the proxy reads back from disk and how records fall
into batches; compare one function's count across builds for a change
smaller than that.

Needs valgrind (apt-get install valgrind). Under callgrind the daemons run
~50 times slower: N = 200,000 takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAEMONS = ("proxy", "sync_server")


def wrap_bin_dir(real: Path, wrapped: Path, out: Path) -> None:
    """`wrapped` holds the build's files, with the daemons replaced by
    scripts that run them under callgrind (output to out/<daemon>.cg)."""
    for f in real.iterdir():
        if f.name not in DAEMONS:
            (wrapped / f.name).symlink_to(f)
    for d in DAEMONS:
        script = wrapped / d
        script.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out / (d + '.cg')} "
                          f"{real / d} \"$@\"\n")
        script.chmod(0o755)


def per_set(cg: Path, n: int, top: int) -> tuple[float, list[tuple[float, str]]]:
    """Total instructions per SET, and the `top` functions by inclusive count."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(cg)], capture_output=True,
                          text=True, check=True).stdout
    total = None
    funcs: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
        if not m:
            continue
        count = int(m.group(1).replace(",", "")) / n
        if "PROGRAM TOTALS" in m.group(2):
            total = count
            continue
        # "<source file>:<function> [<object>]"; a function inlined from
        # several files is listed once per file: keep its largest count.
        name = re.sub(r" \([\d,]+x\)$", "", re.sub(r"^[^:]*:", "", m.group(2)).split(" [")[0])
        if name.startswith(("syncs_", "<syncs_", "crc32fast")):
            funcs[name] = max(count, funcs.get(name, 0.0))
    if total is None:
        raise RuntimeError(f"no totals in {cg}")
    return total, sorted(((c, f) for f, c in funcs.items()), reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000, help="SETs (default 200,000)")
    ap.add_argument("--client", default="py-buffered", choices=("c", "c-buffered", "c-seed", "py", "py-buffered"))
    ap.add_argument("--top", type=int, default=12, help="functions listed per daemon (default 12)")
    a = ap.parse_args()
    real = Path(os.environ.get("SYNCS_BIN_DIR", HERE.parent.parent / "target" / "release")).resolve()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        wrapped = tmp / "bin"
        wrapped.mkdir()
        wrap_bin_dir(real, wrapped, tmp)
        os.environ["SYNCS_BIN_DIR"] = str(wrapped)
        sys.path.insert(0, str(HERE))
        import suite  # noqa: E402  (reads SYNCS_BIN_DIR when imported)

        exe = suite.build_c_bench(tmp) if a.client.startswith("c") else None
        suite.row_syncs(tmp, a.n, a.client, exe, [])
        print(f"{a.client}, {a.n:,} SETs, build {real}")
        for d in DAEMONS:
            total, funcs = per_set(tmp / f"{d}.cg", a.n, a.top)
            print(f"{d}: {total:,.0f} instructions per SET")
            for count, name in funcs:
                print(f"  {count:8,.0f}  {name}")


if __name__ == "__main__":
    main()
