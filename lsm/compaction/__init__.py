"""Compaction: deciding what to compact (``picker``, a pure function of a
Version and the Options, no I/O) is kept apart from doing it (the runner and
flush, which write tables and install the result through
``VersionSet.log_and_apply``).

Depends on ``lsm.manifest``, ``lsm.options`` and ``lsm.base``.
"""
