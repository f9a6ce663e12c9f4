"""Operations on a whole database: checkpoints (lsm/ops/checkpoint.py),
verification (lsm/ops/verify.py) and the helpers they and lsm/restore.py
share (lsm/ops/files.py). Layer 5: below the DB object, whose
``checkpoint()`` and ``verify()`` methods call in here."""
