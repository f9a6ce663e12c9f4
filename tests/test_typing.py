"""mypy on the package (STYLE.md rule 14: mypy runs in CI on ``lsm/``):
``python -m mypy lsm`` from the repository root, with pyproject.toml's
[tool.mypy] configuration, must report no error. The DB's attributes are
declared in lsm/db_state.py; a new one set in lsm/recovery.py (or anywhere
else) without a declaration there fails both tests here (the second one
needs no mypy: it opens a DB and compares its attributes with the
declarations).

Skipped when mypy is not installed (it is in the ``test`` extra). Run
time: ~0.2 s with a warm .mypy_cache, ~2.5-3 s cold (as in CI; mypy 2.4.1,
compiled)."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_mypy_reports_no_errors():
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e .[test])")
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "lsm"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "error:" not in out, f"mypy lsm (exit {proc.returncode}):\n{out}"


def test_db_state_is_annotations_only_and_declares_every_attribute(tmp_path):
    """lsm/db_state.py creates no class attribute (so it costs the DB's
    attribute look-ups nothing and hides no missing assignment behind a
    default), and an open DB, after writes, a flush, a snapshot and a
    stall-free switch, holds no attribute that its classes do not declare."""
    import lsm
    from lsm.db import DB
    from lsm.db_state import DBState

    assert [k for k in vars(DBState) if not k.startswith("__")] == []
    declared = set()
    for cls in DB.__mro__:
        declared |= set(vars(cls).get("__annotations__", {})) | set(vars(cls))
    db = lsm.open(str(tmp_path / "db"), memtable_size=64 << 10)
    try:
        for i in range(3000):
            db.put(b"%08d" % i, b"v" * 40)
        db.delete(b"00000001")
        with db.snapshot():
            db.flush()
        db.stats()
        undeclared = sorted(set(vars(db)) - declared)
    finally:
        db.close()
    assert not undeclared, f"DB attributes not declared in lsm/db_state.py: {undeclared}"
