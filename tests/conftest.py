"""Shared fixtures: seeded raw image batches, gradients with the current backend's autodiff, and one tiny published
entry for the tests of the runtime, the registry and the CLI."""

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras
import numpy as np
import pytest

_CACHE = tempfile.mkdtemp(prefix="zoo-test-cache-")


def pytest_configure(config):
    # Before collection (some modules list the entries at import): the tests never see the user's cache of
    # pulled entries, nor go offline because the shell is; tests of the cache set their own.
    os.environ["ZOO_CACHE"] = _CACHE
    for key in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ.pop(key, None)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE, ignore_errors=True)


def _images(n, size=16, channels=1, seed=0):
    """(n, size, size, channels) float32 raw pixels, uniform in 0..255."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, size, size, channels)).astype(np.float32)


def _value_and_grad(fn, x):
    """(fn(x), d fn / d x) as numpy, for a scalar fn of one array, with the current backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y.numpy(), tape.gradient(y, x).numpy()
    if backend == "jax":
        import jax

        y, g = jax.value_and_grad(fn)(jax.numpy.asarray(x))
        return keras.ops.convert_to_numpy(y), keras.ops.convert_to_numpy(g)
    if backend == "torch":
        import torch

        x = keras.ops.convert_to_tensor(x).requires_grad_(True)  # on Keras' device
        y = fn(x)
        (g,) = torch.autograd.grad(y, x)
        return keras.ops.convert_to_numpy(y.detach()), keras.ops.convert_to_numpy(g)
    pytest.skip(f"no gradient helper for backend {backend}")


@pytest.fixture
def make_images():
    """make_images(n, size=16, channels=1, seed=0) -> (n, size, size, channels) float32 raw pixels."""
    return _images


@pytest.fixture
def value_and_grad():
    """value_and_grad(fn, x) -> (fn(x), d fn / d x) as numpy, on TensorFlow, JAX or torch."""
    return _value_and_grad


@dataclass(frozen=True)
class TinyEntry:
    """The session's tiny published embedder: `root / name` is its folder, `model` the Keras model it exports."""

    root: Path
    model: object
    name: str = "tiny"
    shape: tuple = (8, 8, 3)
    dim: int = 4
    threshold: float = 0.9
    accuracy: float = 0.75

    @property
    def folder(self) -> Path:
        return self.root / self.name


# Its card: a verification entry on 8x8 RGB pictures, with a preprocessing contract (pad with white, Pillow's
# BOX to 8x8) so that the CLI's file inputs of any size reach the model through the runtime's contract.
TINY_CARD = dict(method="Triplet", dataset="synthetic", splits={"test": "synthetic/test"}, primary_metric="accuracy",
                 protocol="verification", recipe="pytest", paper="none", data_license="none",
                 preprocessing={"color": "rgb", "background": [255, 255, 255], "fit": "pad",
                                "resize": {"method": "box", "size": [8, 8]}})


@pytest.fixture(scope="session")
def tiny_entry(tmp_path_factory):
    """A tiny embedder (8x8x3 pixels -> Rescaling -> Dense(4) -> unit length) published once per session, without
    int8, as the only entry of a temporary root. Publishing runs a TensorFlow export subprocess (seconds), so
    the tests share this one; a test that tampers with files works on a copy (shutil.copytree). At the end of the
    session its root must hold the same bytes, so a test that wrote into it fails there rather than another test."""
    from keras import layers

    from zoo.export import publish

    keras.utils.set_random_seed(0)
    images = keras.Input(TinyEntry.shape, name="images")
    x = layers.Flatten()(layers.Rescaling(1.0 / 255.0)(images))
    model = keras.Model(images, layers.UnitNormalization()(layers.Dense(TinyEntry.dim)(x)))
    root = tmp_path_factory.mktemp("tiny-exports")
    publish(TinyEntry.name, model, card=TINY_CARD, metrics={"accuracy": TinyEntry.accuracy},
            threshold=TinyEntry.threshold, int8=False, root=root)
    before = _snapshot(root)
    assert set(before) >= {"tiny/card.json", "tiny/embedder.onnx", "tiny/embedder.keras"}, sorted(before)
    yield TinyEntry(root, model)
    assert _snapshot(root) == before, "a test changed the shared tiny entry; tamper with a copy instead"


def _snapshot(root):
    """relative path -> sha256 of every file under root."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
