"""SavedModel exporter: `<saved_model>/` per tower, serving signature `serving_default` (images -> embeddings)."""

from __future__ import annotations

import numpy as np

ORDER = 10  # exporters run in this order; the ONNX one converts the serving function this one traces
KEY = "saved_model"  # the tower spec's key of this exporter's files
PARITY_ATOL = 1e-5  # SavedModel vs Keras, both float32 on TensorFlow


def filename(role, first) -> str:
    """The first (image) tower's SavedModel is `saved_model/`, the others `<role>_saved_model/`."""
    return "saved_model" if first else f"{role}_saved_model"


def serving_function(model, spec, context):
    """tf.function with the named input signature: inputs -> {"embeddings": (B, D) float32}; one per tower,
    shared through `context` by every exporter that traces it."""
    import tensorflow as tf

    cache = context.setdefault("serving", {})
    if id(model) not in cache:
        @tf.function(input_signature=[tf.TensorSpec([None, *spec["shape"]], spec["dtype"], name=spec["input"])])
        def serve(inputs):
            return {"embeddings": tf.cast(model(inputs, training=False), tf.float32)}

        cache[id(model)] = serve
    return cache[id(model)]


def export(folder, card, towers, golden, context):
    """Write each tower's SavedModel and check it against Keras on the golden inputs."""
    import tensorflow as tf

    for role, model in towers.items():
        spec = card.towers[role]
        serve = serving_function(model, spec, context)
        module = tf.Module()
        module.model, module.serve = model, serve
        tf.saved_model.save(module, str(folder / spec[KEY]), signatures={"serving_default": serve})
        loaded = tf.saved_model.load(str(folder / spec[KEY])).signatures["serving_default"]
        got = loaded(**{spec["input"]: tf.constant(golden[role])})["embeddings"].numpy()
        check_parity("SavedModel", role, got, context["keras"][role], PARITY_ATOL)
    return card


def check_parity(what, role, got, expected, atol) -> None:
    """Raise a RuntimeError when a format's outputs differ from the reference by more than `atol`."""
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    if diff > atol:
        raise RuntimeError(f"parity check failed for tower {role!r}: {what} max abs diff {diff:.2e} > {atol} "
                           f"(shapes {got.shape} vs {expected.shape})")
