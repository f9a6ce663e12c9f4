"""Lowest layer of lsm: errors, binary coding, checksums, compression, file
names and the filesystem layer. Nothing here imports from any other lsm
package."""
