"""Operations on a whole database: checkpoints (lsm/ops/checkpoint.py),
verification (lsm/ops/verify.py), stats (lsm/ops/stats.py) and the helpers
they and lsm/restore.py share (lsm/ops/files.py). Layer 5: below the DB
object, whose ``checkpoint()``, ``verify()`` and ``stats()`` methods
(lsm/db_admin.py) call in here."""
