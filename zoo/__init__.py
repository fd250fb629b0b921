"""Keras 3 model zoo of embedders.

The public API is lazy: `import zoo` imports neither Keras nor TensorFlow until a name that
needs them is used, so `zoo.runtime` stays usable with numpy and onnxruntime alone.
"""

__version__ = "0.1.0"

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
