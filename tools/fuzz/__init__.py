"""The decoder fuzzing of tools/fuzz_atheris.py (its docstring, also
``--help``, says what is fuzzed and how), by concept. Lowest first; a
module imports only from the ones above it:

* ``core``: the lsm modules (imported lazily by ``load``, under atheris'
  instrumentation when that engine runs), the contract helpers (``check``,
  ``Violation``, ``Hang``, ``time_limit``) and ``Target``;
* one module per decoder family, each with its seeds, checksum fixes,
  target functions and ``targets()``: ``batch`` (write batch bodies),
  ``wal`` (segments and replay), ``sstable`` (footer, blocks, properties,
  bloom filter, whole tables), ``manifest`` (manifest files, CURRENT,
  version edits);
* ``targets``: every target by name, in ``--list`` order;
* ``mutate``: the mutations of valid encodings;
* ``engines``: running targets (timer, violations, figures), the random
  and atheris engines, the address-space limit.

No module here imports lsm at import time: ``core.load`` does, so that
atheris can instrument it.
"""
