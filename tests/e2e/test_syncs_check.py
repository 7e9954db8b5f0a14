"""`syncs-check` as operators and CI pipelines use it."""

from __future__ import annotations

import json
import subprocess

from conftest import BIN, ROOT


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "syncs-check"), *args], capture_output=True, text=True, timeout=30)


def test_shipped_rules_pass():
    for path in ("rules", "rules/default.sync", "rules/examples"):
        out = check(str(ROOT / path))
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.strip().splitlines()[-1].startswith("ok:")


def test_every_error_with_line_col_and_caret(tmp_path):
    a = tmp_path / "a.sync"
    a.write_text('target r = redis "redis://x:1"\nrule one: redis key "x" -> nowhere\n'
                 'rule two: redis key /(/ -> r\ndefault redis -> r\n')
    out = check(str(a))
    assert out.returncode == 1
    text = out.stdout
    assert f"{a}:2:" in text and "nowhere" in text, text
    assert f"{a}:3:" in text, text
    assert "^" in text


def test_syntax_error_in_plain_words(tmp_path):
    a = tmp_path / "bad.sync"
    a.write_text('target r = redis "redis://x:1"\nrule one: redis key -> r\n')
    out = check(str(a))
    assert out.returncode == 1
    assert f"{a}:2:" in out.stdout, out.stdout
    assert "key_pattern" not in out.stdout and "expected" in out.stdout, out.stdout


def test_rules_file_tests_run_and_report_failures(tmp_path):
    a = tmp_path / "t.sync"
    a.write_text(
        'target r = redis "redis://x:1"\n'
        'rule s: redis key "session:*" -> r db 2 key "sess:{1}"\n'
        'default redis -> r\n'
        'default mongo -> drop\n'
        'test "sessions move" {\n'
        '    redis 6379 1 SET session:7 x\n'
        '    expect r db 2: SET sess:7 x\n'
        '}\n'
        'test "wrong on purpose" {\n'
        '    redis 6379 1 SET session:7 x\n'
        '    expect r db 3: SET sess:7 x\n'
        '}\n'
    )
    out = check(str(a), "--format", "json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    results = {t["name"]: t for t in report["tests"]}
    assert results["sessions move"]["passed"] is True
    assert results["wrong on purpose"]["passed"] is False
    assert "db 2" in results["wrong on purpose"]["detail"]
    assert report["ok"] is False


def test_explain(tmp_path):
    a = tmp_path / "e.sync"
    a.write_text('target r = redis "redis://x:1"\ntarget b = redis "redis://y:1"\n'
                 'rule s: redis key "session:*" -> b db 2\ndefault redis -> r\ndefault mongo -> drop\n')
    out = check(str(a), "--explain", "redis 6379 1 MSET session:7 x other y")
    assert out.returncode == 0, out.stdout
    assert "rule `s`" in out.stdout
    assert "b: db 2: MSET session:7 x" in out.stdout
    assert "r: db 1: MSET other y" in out.stdout
