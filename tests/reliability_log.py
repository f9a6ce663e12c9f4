"""Counts for the reliability summary (tools/reliability.py writes
RELIABILITY.md from them): when ``LSM_RELIABILITY_LOG`` names a file, each
family appends one JSON line per case."""

import json
import os


def record(family: str, **fields: object) -> None:
    path = os.environ.get("LSM_RELIABILITY_LOG")
    if not path:
        return
    fields.setdefault("violations", 0)
    with open(path, "a") as f:
        f.write(json.dumps({"family": family, **fields}) + "\n")
