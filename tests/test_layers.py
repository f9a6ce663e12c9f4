"""Structure lint: imports point one way (lower layers never import higher
ones), and no module outside the filesystem layer does file I/O itself."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent / "lsm"

# Lower number = lower layer. A module may import only from layers <= its own
# (siblings within a package are fine).
LAYERS = {
    "lsm.base": 0,
    "lsm.options": 1,
    "lsm.wal": 2,
    "lsm.sstable": 2,
    "lsm.memtable_frozen": 1.9,  # a frozen memtable's entries for a flush (lsm.memtable's, below it)
    "lsm.memtable": 2,
    "lsm.batch": 2,
    "lsm.manifest": 3,
    "lsm.iterators": 3,
    "lsm.compaction": 4,
    "lsm.snapshot": 5,
    "lsm.background": 5,
    "lsm.ingest": 5,
    "lsm.ops": 5,
    "lsm.db_state": 5.4,  # the DB's instance attributes, declared for mypy (root of DB's base classes)
    "lsm.db_admin": 5.5,  # DB's base class (snapshots, durability API, maintenance, ops wrappers, close)
    "lsm.db_scan": 5.7,  # DB's base class over DBAdmin (range scans)
    "lsm.db_room": 5.8,  # DB's base class over DBScan (room checks: switches, rotation, stalls)
    "lsm.db": 6,
    "lsm.recovery": 7,
    "lsm.restore": 7,
    "lsm.dump": 7,
    "lsm.doctor": 7,
    "lsm.metrics": 7,
    "lsm": 8,
    "lsm.cli": 9,
}


def layer_of(mod: str) -> tuple[str, int]:
    best = ""
    for prefix in LAYERS:
        if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return best, LAYERS[best]


def modules():
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        name = name.removesuffix(".__init__")
        yield name, path


def test_imports_point_down():
    bad = []
    for name, path in modules():
        pkg, lv = layer_of(name)
        tree = ast.parse(path.read_text())
        typing_only = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                typing_only.update(id(n) for b in node.body for n in ast.walk(b))
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if not t.startswith("lsm"):
                    continue
                tpkg, tlv = layer_of(t)
                if tpkg == pkg:
                    continue
                # Deferred imports inside functions are allowed only downward too.
                if tlv >= lv:
                    bad.append(f"{name} imports {t} (layer {tlv} >= {lv}: only lower layers may be imported)")
    assert not bad, "\n".join(bad)


RAW_IO = re.compile(r"(^|[^.\w])open\(|os\.(open|write|fsync|fdatasync|replace|rename|unlink|remove|pread|truncate)\(")


def test_file_io_only_in_fs_layer():
    offenders = []
    for name, path in modules():
        if name in ("lsm.base.fs", "lsm"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if RAW_IO.search(code) and "lsm.open" not in code and "def open" not in code:
                offenders.append(f"{path.name}:{i}: {line.strip()}")
    assert not offenders, "file I/O outside lsm/base/fs.py:\n" + "\n".join(offenders)
