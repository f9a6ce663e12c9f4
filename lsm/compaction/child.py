"""Entry point of the background worker process:
``python -m lsm.compaction.child`` (see lsm/compaction/worker.py). A module
of its own, so that running it does not re-execute a module the package
import already loaded."""

from lsm.compaction.worker import serve

if __name__ == "__main__":
    serve()
