"""A short soak (tests/soak/soak.py): 60 s of random faults under three
writers, then exact accounting of every write.

The full soak is `python3 tests/soak/soak.py --minutes 20`; this is its CI
size: a lower rate (1,500 writes/s per writer) and a fault every 1-3 s.
SYNCS_SOAK_SECONDS and SYNCS_SOAK_SEED change the length and fix the fault
schedule (the seed of a run is in its output and in the JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, find_tool, need

SOAK = ROOT / "tests" / "soak" / "soak.py"
SECONDS = float(os.environ.get("SYNCS_SOAK_SECONDS", "60"))


def test_soak_confirmed_writes_arrive_exactly_once_under_faults(tmp_path):
    need(find_tool("redis-server"), "redis-server")
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(SOAK), "--seconds", str(SECONDS), "--rate", "1500",
           "--fault-every", "1", "3", "--settle-timeout", "180", "--out", str(out)]
    if os.environ.get("SYNCS_SOAK_SEED"):
        cmd += ["--seed", os.environ["SYNCS_SOAK_SEED"]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=SECONDS + 600)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the soak stops its daemons and writers
        stdout, stderr = proc.communicate(timeout=60)
        raise AssertionError(f"the soak did not finish in time:\n{stdout[-3000:]}\n{stderr[-3000:]}") from None
    run = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    print(run.stdout)
    print(run.stderr, file=sys.stderr)
    assert out.exists(), f"the soak wrote no summary (status {run.returncode}):\n{run.stderr[-3000:]}"
    summary = json.loads(out.read_text())
    assert run.returncode != 2 and "harness_error" not in summary, \
        f"the soak harness failed, not syncs: {summary.get('harness_error')}\n{run.stderr[-3000:]}"
    totals = summary["totals"]
    print(f"\nRELIABILITY {{'test': 'soak {SECONDS:.0f}s', 'seed': {summary['seed']}, "
          f"'faults': {summary['faults_by_kind']}, **{totals}}}")
    # The harness did its job: writes went through, faults happened.
    assert totals["confirmed"] > 0 and totals["arrived"] > 0, totals
    assert summary["faults"] >= SECONDS / 6, summary["faults_by_kind"]
    # What syncs promises.
    assert not summary["crashes"], summary["crashes"]
    assert totals["lost_confirmed"] == 0, summary["per_writer"]
    assert totals["duplicates"] == 0, [w["duplicate_runs"] for w in summary["per_writer"]]
    assert totals["out_of_order"] == 0, totals
    assert totals["never_sent"] == 0, totals
    assert run.returncode == 0, run.stdout[-3000:]
