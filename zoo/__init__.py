"""Keras 3 model zoo of embedders.

The public API is lazy: `import zoo` imports neither Keras nor TensorFlow until a name that
needs them is used, so `zoo.runtime` stays usable with numpy and onnxruntime alone.

Imported before TensorFlow, `import zoo` turns on TensorFlow's oneDNN CPU kernels on x86-64
(`TF_ENABLE_ONEDNN_OPTS=1`; see `prefer_onednn`). Set `TF_ENABLE_ONEDNN_OPTS=0` to keep TensorFlow's own.
"""

import os
import platform
import sys

__version__ = "0.1.0"


def prefer_onednn():
    """`TF_ENABLE_ONEDNN_OPTS=1` on x86-64 where the user has not set it and TensorFlow is not imported yet.

    TensorFlow (>= 2.9) turns its oneDNN kernels on by itself only on x86 CPUs with AVX-512 VNNI, BF16
    or AMX; on others (e.g. AVX2 without VNNI) it keeps its Eigen kernels. On a 2-core AVX2 EPYC the
    zoo's training step (conv4, fused batch norm, max pooling and their gradients) was faster with
    oneDNN: `python benchmarks/training.py --peers` measures the zoo with and without it (zoo_tf,
    zoo_tf_eigen) beside the peers, and `benchmarks/training.py` every recipe's step with either
    setting of the variable. TensorFlow reads the variable once, when it is imported: this applies
    only to a process that imports `zoo` before TensorFlow (or Keras on the TensorFlow backend), as the
    zoo's CLI and recipes do. oneDNN's sums run in another order than Eigen's, so float results may
    differ in the last bits. Other architectures are left to TensorFlow's own choice.

    Returns:
        bool. whether this call set the variable.
    """
    if ("tensorflow" in sys.modules or "TF_ENABLE_ONEDNN_OPTS" in os.environ
            or platform.machine().lower() not in ("x86_64", "amd64")):
        return False
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return True


prefer_onednn()

_LAZY = {
    "load": "zoo.registry",
    "list_models": "zoo.registry",
    "info": "zoo.registry",
    "Card": "zoo.registry",
    "publish": "zoo.export",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
