"""The write-ahead log: one record per committed write batch, in segment
files named by their first sequence number. ``format`` defines the bytes
(spec: docs/format/wal.md), ``reader`` scans segments and replays them at
open under the ``wal_recovery`` mode, ``writer`` appends and syncs
(``spare`` prepares its next segment ahead, preallocated), ``archive``
keeps retired segments under the retention options."""
