"""Converters of pretrained checkpoints that registry packages ship into the zoo's own Keras layers, one module
per source format (keras-hub's `convert` shape): `zoo.convert.dlib` reads dlib's serialised DNNs (`.dat`).

A converter reads the source file itself (no source framework needed), builds the network from
`zoo.backbones`, and says clearly, naming the file, where a file does not hold what it expects. Parity with the
source framework's own outputs is checked by the import recipes (`recipes/import_*.py`), which also record the
file's package, version, sha256 and licence in the card's `source`.
"""
