"""One keras.Model subclass per representation-learning method; `MetricLearning` trains every registered loss."""

from zoo.methods.base import EmbeddingMethod

_CLASSES = {
    "Siamese": "zoo.methods.siamese",
    "MetricLearning": "zoo.methods.metric",
    "Triplet": "zoo.methods.triplet",
    "Classifier": "zoo.methods.classifier",
    "ProtoNet": "zoo.methods.protonet",
    "SimCLR": "zoo.methods.simclr",
    "BarlowTwins": "zoo.methods.barlow_twins",
    "ContextPrediction": "zoo.methods.context_prediction",
    "MICLe": "zoo.methods.micle",
    "CLIP": "zoo.methods.clip",
}

__all__ = ["EmbeddingMethod", *_CLASSES]


def __getattr__(name):
    # Lazy, so importing one method does not build the others' imports.
    if name in _CLASSES:
        import importlib

        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'zoo.methods' has no attribute {name!r}")
