"""Shared fixtures: seeded raw image batches, and gradients with the current backend's autodiff."""

import os
import shutil
import tempfile

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
