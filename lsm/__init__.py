"""lsm: an LSM-tree key-value storage engine for write-heavy ingestion."""
