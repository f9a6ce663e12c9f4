"""The ``lsm`` command through its real entry point (``python -m lsm.cli``
in a subprocess, and once the installed ``lsm`` script): outputs in text
and JSON, exit statuses (0 ok, 1 failure with one ``lsm: error:`` line, 2
usage) and messages for bad input.

verify, checkpoint, restore and ingest are tested when this build has the
library API behind them, and their "not available in this build" answer
when it does not.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import pty
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone

import pytest

import lsm
from lsm import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
COMMANDS = ("get", "put", "delete", "scan", "stats", "flush", "compact", "verify", "checkpoint", "restore",
            "ingest", "dump-wal", "dump-sst", "dump-manifest", "doctor")


def run(*args, input=None, stderr=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "lsm.cli", *map(str, args)], input=input, stdout=subprocess.PIPE,
                          stderr=stderr, env=ENV, timeout=300, cwd=str(ROOT), check=False)


def ok(*args, input=None):
    p = run(*args, input=input)
    assert p.returncode == 0, (args, p.returncode, p.stderr.decode())
    return p.stdout.decode()


def fails(*args, code=1, input=None):
    """Run a command that must fail with ``code``; return its stderr."""
    p = run(*args, input=input)
    err = p.stderr.decode()
    assert p.returncode == code, (args, p.returncode, p.stdout, err)
    if code == 1:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lsm: error: "), err
    else:
        assert "usage: lsm" in err, err
    return err


@pytest.fixture
def db(tmp_path):
    """A database holding a few text and binary keys, written in-process
    (the CLI reads what the library wrote)."""
    path = tmp_path / "db"
    with lsm.open(path, background="inline") as d:
        d.put(b"user:1", b"alice")
        d.put(b"user:2", b"bob")
        d.put(b"\x00\xff", b"bin\x01ary\\")
        d.put(b"zeta", "\u00e9t\u00e9".encode())
    return path


def test_help_for_every_command(capsys):
    top = ok("--help")  # through the entry point once; each command's help in-process (argparse's own)
    for cmd in COMMANDS:
        assert cmd in top
        with pytest.raises(SystemExit) as e:
            cli.main([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: lsm {cmd}") and "--help" in out, out
    assert ok("--version").strip() == f"lsm {lsm.__version__}"


def test_usage_errors_exit_2(db):
    fails("frobnicate", code=2)
    fails("get", code=2)  # DB and KEY missing
    fails("restore", db, db.parent / "r", code=2)  # --to-seq or --to-time is required
    fails("restore", db, db.parent / "r", "--to-seq", "1", "--to-time", "2026-01-01T00:00:00Z", code=2)
    fails("scan", db, "--limit", "many", code=2)
    err = fails("get", db, "--format", "hex", "zz", code=2)
    assert "KEY: not valid hex: 'zz'" in err
    err = fails("put", db, "k", "b64:%%%", code=2)
    assert "VALUE: not valid base64" in err
    err = fails("scan", db, "--start", "hex:0", code=2)
    assert "--start: not valid hex" in err


def test_put_get_delete_in_every_format(db):
    assert ok("get", db, "user:1") == "alice\n"
    # text output escapes what is not printable, and the backslash
    assert ok("get", db, "hex:00ff") == "bin\\x01ary\\\\\n"
    assert ok("get", db, "--format", "hex", "00ff") == (b"bin\x01ary\\").hex() + "\n"
    assert ok("get", db, "--format", "base64", "AP8=") == base64.b64encode(b"bin\x01ary\\").decode() + "\n"
    assert ok("get", db, "zeta") == "\u00e9t\u00e9\n"
    raw = run("get", db, "b64:AP8=", "--raw")
    assert raw.returncode == 0 and raw.stdout == b"bin\x01ary\\"
    doc = json.loads(ok("get", db, "user:2", "--json"))
    assert doc == {"key": "user:2", "found": True, "value": "bob"}

    seq = json.loads(ok("put", db, "--format", "hex", "6b31", "76310a", "--json"))["seq"]
    assert seq == 5
    assert ok("get", db, "k1", "--format", "text") == "v1\\x0a\n"
    ok("put", db, "text:hex:literal", "x")  # the text: prefix keeps a key that looks like a prefix
    assert ok("get", db, "text:hex:literal") == "x\n"
    ok("put", db, "fromstdin", "-", input=b"\x00raw bytes\n")
    assert run("get", db, "fromstdin", "--raw").stdout == b"\x00raw bytes\n"
    ok("put", db, "off", "1", "--sync", "off")

    assert json.loads(ok("delete", db, "user:1", "--json"))["seq"] > seq
    err = fails("get", db, "user:1")
    assert "key user:1 not found" in err
    p = run("get", db, "user:1", "--json")
    assert p.returncode == 1 and json.loads(p.stdout) == {"key": "user:1", "found": False, "value": None}
    ok("delete", db, "never-there")  # deleting an absent key is not an error
    with lsm.open(db, background="inline") as d:
        assert d.get(b"k1") == b"v1\n" and d.get(b"user:1") is None and d.get(b"off") == b"1"


def test_missing_or_foreign_database_is_refused(tmp_path):
    missing = tmp_path / "nope"
    err = fails("get", missing, "k")
    assert "no database here" in err and str(missing) in err
    err = fails("put", missing, "k", "v")
    assert "--create" in err
    assert not missing.exists(), "a failed command created the directory"
    empty = tmp_path / "empty"
    empty.mkdir()
    err = fails("scan", empty)
    assert "no database here" in err
    assert os.listdir(empty) == [], "a failed command left files behind"
    (empty / "notes.txt").write_text("mine")
    err = fails("stats", empty)
    assert "not an lsm database" in err and "notes.txt" in err
    ok("put", "--create", tmp_path / "new", "k", "v")
    assert ok("get", tmp_path / "new", "k") == "v\n"


def test_locked_database_held_by_another_process(db):
    holder = lsm.open(db, background="inline")  # this test process holds the lock
    try:
        err = fails("get", db, "user:1")
        assert "already open" in err
        fails("put", db, "k", "v")
    finally:
        holder.close()
    assert ok("get", db, "user:1") == "alice\n"


def test_bad_option_is_one_line(db):
    err = fails("get", db, "user:1", "-o", "memtable_size=lots")
    assert "memtable_size" in err
    err = fails("get", db, "user:1", "-o", "no_such_option=1")
    assert "no_such_option" in err
    fails("get", db, "user:1", "-o", "justaname", code=2)


def test_scan_ranges_and_formats(db):
    out = ok("scan", db)
    assert out.splitlines() == ["\\x00\\xff\tbin\\x01ary\\\\", "user:1\talice", "user:2\tbob",
                                "zeta\t\u00e9t\u00e9"]
    assert ok("scan", db, "--prefix", "user:", "--keys-only").split() == ["user:1", "user:2"]
    assert ok("scan", db, "--start", "user:2", "--keys-only").split() == ["user:2", "zeta"]
    assert ok("scan", db, "--stop", "text:user:2", "--keys-only", "--format", "hex").split() == ["00ff",
                                                                                            b"user:1".hex()]
    assert ok("scan", db, "--reverse", "--limit", "2", "--keys-only").split() == ["zeta", "user:2"]
    assert ok("scan", db, "--limit", "0") == ""
    rows = [json.loads(line) for line in ok("scan", db, "--json", "--format", "base64").splitlines()]
    assert [(base64.b64decode(r["key"]), base64.b64decode(r["value"])) for r in rows] == [
        (b"\x00\xff", b"bin\x01ary\\"), (b"user:1", b"alice"), (b"user:2", b"bob"),
        (b"zeta", "\u00e9t\u00e9".encode())]


def test_stats_text_and_json(db):
    doc = json.loads(ok("stats", db, "--json"))
    assert doc["health"] == "ok" and doc["last_seq"] == 4
    for key in ("levels", "stalls", "wal_sync_latency", "wal_unsynced_bytes", "space_amplification"):
        assert key in doc
    assert doc["memtable_entries"] == 4  # replayed from the WAL at this open
    text = ok("stats", db)
    assert "health              ok" in text and "last seq            4" in text
    assert "level  files" in text


def test_flush_compact_and_dump_sst(db):
    doc = json.loads(ok("flush", db, "--json"))
    assert doc["sst_files"] == 1 and doc["level0_files"] == 1 and doc["durable_seq"] == 4
    (sst,) = sorted(db.glob("*.sst"))
    d = json.loads(ok("dump-sst", sst, "--json", "--format", "hex"))
    assert d["properties"]["num_entries"] == 4 and d["file_size"] == sst.stat().st_size
    assert [(bytes.fromhex(e["key"]), e["seq"], e["kind"]) for e in d["entries"]] == [
        (b"\x00\xff", 3, "PUT"), (b"user:1", 1, "PUT"), (b"user:2", 2, "PUT"), (b"zeta", 4, "PUT")]
    assert bytes.fromhex(d["index"][-1]["last_key"]) == b"zeta"
    text = ok("dump-sst", sst, "--limit", "1")
    assert "num_entries = 4" in text and "\\x00\\xff @3 PUT = bin\\x01ary\\\\" in text and "user:1" not in text.split(
        "entries")[-1]
    assert "entries" not in ok("dump-sst", sst, "--no-entries").split("index")[-1]

    for i in range(200):
        ok_put = i % 50 == 0  # a few through the CLI, the rest in-process
        if ok_put:
            ok("put", db, f"k{i:03d}", "v" * 10)
    with lsm.open(db, background="inline", memtable_size=4096) as d:
        for i in range(2000):
            d.put(b"n%04d" % i, b"w" * 30)
    p = run("compact", db, "--json")
    assert p.returncode == 0 and p.stderr == b"", "compact printed progress although stderr is not a terminal"
    res = json.loads(p.stdout)
    assert res["files_after"] >= 1 and res["bytes_after"] > 0
    text = ok("compact", db, "--start", "n0100", "--stop", "n0200")
    assert text.startswith("compacted in ")
    assert ok("get", db, "n1999") == "w" * 30 + "\n"
    assert len(ok("scan", db, "--prefix", "n", "--keys-only").split()) == 2000


def test_compact_shows_progress_on_a_terminal(db):
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "lsm.cli", "compact", str(db)], stdout=subprocess.PIPE,
                                stderr=slave, env=ENV, cwd=str(ROOT))
    finally:
        os.close(slave)  # the child holds its own copy; reads end (EIO) when it exits
    shown = b""
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            shown += chunk
        out = proc.stdout.read()
        assert proc.wait(300) == 0
    finally:
        proc.stdout.close()
        os.close(master)
    assert b"compacting" in shown, shown
    assert out.decode().startswith("compacted in ")  # the result still goes to stdout


def test_dump_wal_text_json_and_damage(tmp_path):
    path = tmp_path / "db"
    with lsm.open(path, background="inline") as d:
        d.put(b"a", b"1")
        with d.batch() as b:
            b.put(b"b", b"2")
            b.delete(b"a")
        d._simulate_crash()  # keep the WAL unflushed
    text = ok("dump-wal", path)
    assert "seq 1 count 1" in text and "PUT a = 1" in text
    assert "seq 2 count 2" in text and "PUT b = 2; DELETE a" in text
    segs = [json.loads(line) for line in ok("dump-wal", path, "--json").splitlines()]
    records = [r for s in segs for r in s["records"]]
    assert [(r["seq"], r["count"]) for r in records] == [(1, 1), (2, 2)]
    assert records[1]["ops"] == [{"kind": "PUT", "key": "b", "value": "2"},
                                 {"kind": "DELETE", "key": "a", "value": ""}]
    assert records[0]["time"].endswith("Z") and all(s["damage"] is None for s in segs)
    # a torn tail: garbage after the last record
    (seg,) = [pathlib.Path(s["path"]) for s in segs if s["records"]]
    with open(seg, "ab") as f:
        f.write(b"\x07" * 40)
    text = ok("dump-wal", seg)
    assert "damage at offset" in text and "torn tail" in text and "seq 2 count 2" in text
    doc = json.loads(ok("dump-wal", seg, "--json"))
    assert doc["damage"]["is_tail"] is True and len(doc["records"]) == 2
    err = fails("dump-wal", tmp_path / "nothing-here")
    assert "No such file" in err or "no such file" in err
    (tmp_path / "emptydir").mkdir()
    assert "no WAL segments" in fails("dump-wal", tmp_path / "emptydir")


def test_dump_manifest_text_and_json(db):
    with lsm.open(db, background="inline", memtable_size=2048, l0_compaction_trigger=2) as d:
        for i in range(300):
            d.put(b"m%04d" % i, b"x" * 20)
        d.flush()
        live = d.stats()["sst_files"]
        last = d.last_seq
    doc = json.loads(ok("dump-manifest", db, "--json"))
    v = doc["version"]
    assert v["last_seq"] == last and v["flushed_seq"] == last
    assert sum(len(files) for files in v["levels"]) == live
    on_disk = {int(p.stem) for p in db.glob("*.sst")}
    assert {f["number"] for files in v["levels"] for f in files} == on_disk
    assert doc["damage"] is None and doc["edits"][0]["offset"] == 16
    text = ok("dump-manifest", db)
    assert "current version:" in text and f"last seq {last}" in text
    # a manifest file given directly, with its last record torn
    mpath = pathlib.Path(doc["manifest"])
    torn = db.parent / "MANIFEST-copy"
    torn.write_bytes(mpath.read_bytes()[:-3])
    doc2 = json.loads(ok("dump-manifest", torn, "--json"))
    assert doc2["damage"] is not None and len(doc2["edits"]) == len(doc["edits"]) - 1
    assert "damage at offset" in ok("dump-manifest", torn)
    (db.parent / "notadb").mkdir()
    assert "no CURRENT" in fails("dump-manifest", db.parent / "notadb")


def test_doctor(tmp_path):
    before = sorted(os.listdir(tmp_path))
    doc = json.loads(ok("doctor", tmp_path, "--seconds", "0.02", "--threads", "2", "--json"))
    for name in ("fdatasync", "fsync", "dir_fsync", "write"):
        assert doc[name]["samples"] >= 5 and 0 < doc[name]["p50"] <= doc[name]["p99"] <= doc[name]["max"]
    c = doc["commits"]
    assert c["off"] > 0 and c["full"] > 0 and c["full_threads"] > 0 and c["threads"] == 2
    assert set(doc["levels"]) == {"OFF", "NORMAL", "BARRIER", "FULL", "EXTRA"}
    assert sorted(os.listdir(tmp_path)) == before, "doctor left its scratch files behind"
    text = ok("doctor", tmp_path, "--seconds", "0.02", "--threads", "2")
    assert "fdatasync" in text and "directory fsync" in text
    for level in ("OFF", "NORMAL", "BARRIER", "FULL", "EXTRA"):
        assert f"\n  {level}" in text
    assert "2 threads with group commit" in text
    fails("doctor", tmp_path / "missing", "--seconds", "0.01")
    fails("doctor", tmp_path, "--seconds", "0", code=2)


def test_installed_console_script():
    exe = shutil.which("lsm")
    if exe is None:
        pytest.skip("the lsm console script is not installed (pip install -e .)")
    p = subprocess.run([exe, "--version"], capture_output=True, timeout=60, check=False)
    assert p.returncode == 0 and p.stdout.decode().strip() == f"lsm {lsm.__version__}"


# ------------------------------------------------ commands over newer library APIs
needs_verify = pytest.mark.skipif(not hasattr(lsm.DB, "verify"), reason="this build has no DB.verify")
needs_checkpoint = pytest.mark.skipif(not hasattr(lsm.DB, "checkpoint"), reason="this build has no DB.checkpoint")
needs_restore = pytest.mark.skipif(not hasattr(lsm, "restore"), reason="this build has no lsm.restore")
needs_ingest = pytest.mark.skipif(not hasattr(lsm.DB, "ingest"), reason="this build has no DB.ingest")


@pytest.mark.parametrize("argv,api", [
    (("verify", "{db}"), (lsm.DB, "verify")),
    (("checkpoint", "{db}", "{dest}"), (lsm.DB, "checkpoint")),
    (("restore", "{db}", "{dest}", "--to-seq", "1"), (lsm, "restore")),
    (("ingest", "{db}", "{rows}"), (lsm.DB, "ingest")),
])
def test_missing_api_says_not_available(db, tmp_path, argv, api):
    if hasattr(*api):
        pytest.skip(f"this build has {api[1]}")
    rows = tmp_path / "rows.csv"
    rows.write_text("a,1\n")
    args = [a.format(db=db, dest=tmp_path / "dest", rows=rows) for a in argv]
    assert "not available in this build" in fails(*args)


@needs_verify
def test_verify_clean_and_damaged(db):
    ok("flush", db)
    out = ok("verify", db)
    assert out.strip()
    doc = json.loads(ok("verify", db, "--json"))
    assert doc.get("ok", True) is True
    (sst,) = sorted(db.glob("*.sst"))
    data = bytearray(sst.read_bytes())
    data[10] ^= 0xFF  # inside the first data block
    sst.write_bytes(bytes(data))
    p = run("verify", db, "--json")
    assert p.returncode == 1
    assert sst.name in p.stderr.decode() or sst.name in p.stdout.decode()
    assert "verification failed" in p.stderr.decode()


@needs_checkpoint
def test_checkpoint_is_openable_copy(db, tmp_path):
    dest = tmp_path / "cp"
    out = ok("checkpoint", db, dest, "--json")
    assert json.loads(out) is not None
    assert ok("scan", dest, "--keys-only", "--format", "hex").split() == [
        b"\x00\xff".hex(), b"user:1".hex(), b"user:2".hex(), b"zeta".hex()]
    err = fails("checkpoint", db, dest)  # the destination is not empty any more
    assert str(dest) in err


@needs_restore
def test_restore_to_seq_and_time(db, tmp_path):
    cp = tmp_path / "cp"
    if hasattr(lsm.DB, "checkpoint"):
        ok("checkpoint", db, cp)
    else:
        shutil.copytree(db, cp)
    ok("restore", cp, tmp_path / "r2", "--to-seq", "2")
    assert ok("scan", tmp_path / "r2", "--keys-only").split() == ["user:1", "user:2"]
    # --to-time: halfway between the commit times of seq 3 and seq 4 (from the WAL)
    stamps = {r["seq"]: r["timestamp_us"] for line in ok("dump-wal", cp, "--json").splitlines()
              for r in json.loads(line)["records"]}
    mid_us = (stamps[3] + stamps[4]) // 2
    assert stamps[3] < mid_us < stamps[4]
    when = datetime.fromtimestamp(mid_us / 1e6, timezone.utc).isoformat(timespec="microseconds")
    doc = json.loads(ok("restore", cp, tmp_path / "r3", "--to-time", when.replace("+00:00", "Z"), "--json"))
    assert doc["seq"] == 3
    assert ok("scan", tmp_path / "r3", "--keys-only", "--format", "hex").split() == [
        b"\x00\xff".hex(), b"user:1".hex(), b"user:2".hex()]
    err = fails("restore", cp, tmp_path / "r2", "--to-seq", "1")  # the target is not empty
    assert str(tmp_path / "r2") in err
    fails("restore", cp, tmp_path / "r4", "--to-time", "yesterday", code=2)


@needs_ingest
def test_ingest_csv_and_jsonl(db, tmp_path):
    rows = tmp_path / "rows.csv"
    rows.write_text("key,value\nc1,one\n\"c,2\",\"two, with comma\"\n")
    out = ok("ingest", db, rows)
    assert "2 rows" in out
    assert ok("get", db, "c,2") == "two, with comma\n"
    # what scan --json prints, ingest reads back (binary-safe in base64)
    dump = ok("scan", db, "--json", "--format", "base64")
    jl = tmp_path / "rows.jsonl"
    jl.write_text(dump)
    new = tmp_path / "copy"
    doc = json.loads(ok("ingest", new, jl, "--create", "--format", "base64", "--json"))
    assert doc["rows"] == len(dump.splitlines())
    assert ok("scan", new, "--format", "hex") == ok("scan", db, "--format", "hex")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "a", "value": "b"}\n{"key": 1}\n')
    assert "line 2" in fails("ingest", db, bad)
    assert "no such file" in fails("ingest", db, tmp_path / "absent.csv")


def test_progress_without_tqdm_is_a_plain_line(monkeypatch, capsys):
    Progress = cli.Progress
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    bar = Progress("working", total=10, enabled=True)
    bar.set(5)
    bar.close()
    err = capsys.readouterr().err
    assert "\rworking:  50%" in err and err.endswith("\r")
    quiet = Progress("working", total=10, enabled=False)
    quiet.set(5)
    quiet.close()
    assert capsys.readouterr().err == ""


def test_command_line_examples_run(tmp_path):
    """docs/operations.md, "Command line": every ```sh block, in order, as
    one bash script (set -e) in an empty directory, with ``lsm`` on PATH."""
    text = (ROOT / "docs" / "operations.md").read_text()
    start = text.index("\n## Command line\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```sh\n(.*?)```", text[start:end if end >= 0 else None], re.DOTALL)
    assert len(blocks) >= 3
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "lsm").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lsm.cli "$@"\n')
    (bindir / "lsm").chmod(0o755)
    (bindir / "python").symlink_to(sys.executable)
    work = tmp_path / "work"
    work.mkdir()
    env = dict(ENV, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    script = "set -e\n" + "\n".join(blocks)
    p = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600,
                       check=False)
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    out = p.stdout
    assert "alice\n" in out and "6869\n" in out and "exit status 1" in out
    assert "lsm: error: key nope not found" in p.stderr
    assert '{"key": "user:2", "value": "bob"}' in out
    assert "user:1\nuser:2\n" in out  # the restore as of commit 2
    assert "What each sync level costs here" in out
    with lsm.open(work / "copy" / "db", background="inline") as copy, \
            lsm.open(work / "data" / "db", background="inline") as orig:
        assert list(copy.items()) == list(orig.items())
        assert orig.get(b"sku:2") == b"pear" and orig.get(b"user:2") is None
