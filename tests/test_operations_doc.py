"""The examples of docs/operations.md, "Library API", run as they stand:
every ```python block under that heading, in order, as one script, in a
fresh interpreter whose working directory is an empty directory (a fresh
interpreter also gets its own background worker processes)."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"


def library_api_blocks():
    text = DOC.read_text()
    start = text.index("\n## Library API\n")
    nxt = re.search(r"\n## (?!#)", text[start + 1:])
    section = text[start: start + 1 + nxt.start()] if nxt else text[start:]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_library_api_examples_run(tmp_path):
    blocks = library_api_blocks()
    assert len(blocks) >= 4
    script = tmp_path / "examples.py"
    script.write_text("\n".join(f"# --- example {i + 1}\n{code}" for i, code in enumerate(blocks)))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, str(script)], check=False, cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert (tmp_path / "backups" / "ck-1" / "CURRENT").exists()
    assert (tmp_path / "data" / "restored" / "CURRENT").exists()
    assert "True" in run.stdout  # verify_path(...).ok
