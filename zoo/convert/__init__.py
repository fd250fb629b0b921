"""Converters of pretrained checkpoints that registry packages ship into the zoo's own Keras layers, one module
per source format (keras-hub's `convert` shape): `zoo.convert.dlib` reads dlib's serialised DNNs (`.dat`).

A converter reads the source file itself (no source framework needed), builds the network from
`zoo.backbones`, and says clearly, naming the file, where a file does not hold what it expects. Parity with the
source framework's own outputs is checked by the import recipes (`recipes/import_*.py`), which also record the
file's package, version, sha256 and licence in the card's `source`.
"""

import hashlib
from pathlib import Path

__all__ = ["file_sha256"]


def file_sha256(path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks.

    Args:
        path: str | Path. the file.
    """
    digest = hashlib.sha256()
    with open(Path(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
