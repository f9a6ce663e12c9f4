"""The manifest layer: version edits (the manifest's records, an on-disk
format specified in ``docs/format/manifest.md``), immutable versions (the
live SSTables per level) and the version set (the one place the live file
set changes, and the only writer of MANIFEST-* and CURRENT).

Depends only on ``lsm.base``.
"""

from lsm.manifest.edit import Tag, VersionEdit
from lsm.manifest.version import FileMeta, Version, VersionBuilder
from lsm.manifest.version_set import VersionSet

__all__ = ["FileMeta", "Tag", "Version", "VersionBuilder", "VersionEdit", "VersionSet"]
