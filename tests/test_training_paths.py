"""The zoo's fast training paths compute what Keras computes: fused batch norm, tiled max pooling, array batches;
and `import zoo` turns on TensorFlow's oneDNN kernels where TensorFlow has not loaded yet; a mixed-precision fit
turns back into the float32 model (`--precision`).

References: Keras' own layers (BatchNormalization, MaxPooling2D) and its own array batching, run side by side.
"""

import os
import platform
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from zoo.backbones import FusedBatchNormalization, TiledMaxPooling2D, conv4
from zoo.methods.base import array_dataset, default_jit_compile
from zoo.methods.triplet import Triplet

pytestmark = pytest.mark.multibackend

needs_tensorflow = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow path")


@needs_tensorflow
@pytest.mark.parametrize("shape", [(6, 5, 5, 4), (1, 1, 1, 3), (5, 6)])
def test_fused_batch_norm_matches_keras(shape, value_and_grad):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=shape).astype(np.float32)
    weights = rng.normal(size=shape).astype(np.float32)  # a loss that weighs every output differently
    ref, new = keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)
    for layer in (ref, new):
        layer.build(shape)
    gamma = rng.uniform(0.5, 1.5, shape[-1:]).astype(np.float32)
    beta = rng.normal(size=shape[-1:]).astype(np.float32)
    for layer in (ref, new):
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    got = [value_and_grad(lambda t, layer=layer: ops.sum(layer(t, training=True) * weights), x) for layer in (ref, new)]
    np.testing.assert_allclose(got[1][0], got[0][0], rtol=1e-5, atol=1e-4)  # the loss
    np.testing.assert_allclose(got[1][1], got[0][1], rtol=1e-4, atol=1e-5)  # d loss / d x
    for name in ("moving_mean", "moving_variance"):  # one update each, from the training call above
        np.testing.assert_allclose(ops.convert_to_numpy(getattr(new, name)), ops.convert_to_numpy(getattr(ref, name)),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(new(x, training=False)), ops.convert_to_numpy(ref(x, training=False)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, pool", [((3, 8, 8, 5), 2), ((2, 7, 9, 3), 2), ((2, 9, 9, 2), 3), ((2, 6, 6, 2), (2, 3))])
def test_tiled_max_pooling_matches_keras(shape, pool, value_and_grad):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    ref, new = keras.layers.MaxPooling2D(pool), TiledMaxPooling2D(pool)
    weights = rng.normal(size=tuple(ops.shape(ref(x)))).astype(np.float32)
    got = [value_and_grad(lambda t, layer=layer: ops.sum(layer(ops.relu(t)) * weights), x) for layer in (ref, new)]
    np.testing.assert_array_equal(ops.convert_to_numpy(new(x)), ops.convert_to_numpy(ref(x)))
    np.testing.assert_allclose(got[1][0], got[0][0], rtol=1e-6)
    np.testing.assert_array_equal(got[1][1], got[0][1])  # no ties among random maxima: the same gradient


def test_conv4_saves_and_loads_with_the_fast_layers(tmp_path, make_images):
    encoder = conv4((28, 28, 1), filters=4)
    encoder.save(tmp_path / "conv4.keras")
    loaded = keras.saving.load_model(tmp_path / "conv4.keras", safe_mode=True)
    kinds = {type(layer).__name__ for layer in loaded.layers}
    assert {"FusedBatchNormalization", "TiledMaxPooling2D"} <= kinds
    images = make_images(3, size=28)
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images)), ops.convert_to_numpy(encoder(images)), atol=1e-6)


@needs_tensorflow
@pytest.mark.parametrize("shuffle", [True, False])
def test_array_dataset_gives_keras_batches(shuffle):
    array_data_adapter = pytest.importorskip("keras.src.trainers.data_adapters.array_data_adapter")
    import tensorflow as tf

    rng = np.random.default_rng(2)
    cases = [(rng.normal(size=(50, 3)), np.arange(50), 8),  # float64 becomes float32, as in Keras; a partial batch
             ((rng.normal(size=(30, 2)).astype(np.float32), rng.normal(size=(30, 4))), np.arange(30), 10),
             ({"a": rng.integers(0, 9, size=(20, 2))}, None, 6),
             ((rng.normal(size=(12, 2)), rng.integers(0, 9, size=(12, 3))), None, 5)]  # a tuple of inputs, no y
    for x, y, batch_size in cases:
        keras.utils.set_random_seed(3)
        expected = list(array_data_adapter.ArrayDataAdapter(x, y, batch_size=batch_size, shuffle=shuffle)
                        .get_tf_dataset())
        keras.utils.set_random_seed(3)
        dataset = array_dataset(x, y, batch_size, shuffle)
        got = list(dataset)
        rows = len(keras.tree.flatten(x)[0])
        assert len(got) == len(expected) == -(-rows // batch_size)
        for g, e in zip(got, expected):
            tf.nest.assert_same_structure(g, e)  # how fit() reads a batch: x alone, or (x, y)
            for a, b in zip(tf.nest.flatten(g), tf.nest.flatten(e)):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert dataset.options().autotune.enabled is False  # no autotuning thread for the iterator to wait on


@needs_tensorflow
def test_fit_on_arrays_trains_as_keras_fit(make_images):
    """The zoo's fit() with numpy arrays ends with the weights Keras' own fit() gives, from the same start."""
    images = make_images(48, size=28)
    labels = np.repeat(np.arange(12), 4)
    weights = []
    for fit in (Triplet.fit, keras.Model.fit):
        keras.utils.set_random_seed(4)
        model = Triplet(conv4((28, 28, 1), filters=4), mining="batch_hard")
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(model, images, labels, batch_size=16, epochs=2, shuffle=True, verbose=0)
        if fit is Triplet.fit:  # the user asked for shuffling, and got it: nothing to warn about
            assert not [w for w in caught if "shuffle" in str(w.message)]
        weights.append([ops.convert_to_numpy(w) for w in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_jit_compile_default():
    model = Triplet(conv4((28, 28, 1), filters=4))
    model.compile(optimizer="adam")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        cpu_only = all(d.device_type == "CPU" for d in tf.config.list_physical_devices())
        assert default_jit_compile() == (False if cpu_only else "auto")
        assert model.jit_compile is (not cpu_only)
    else:
        assert default_jit_compile() == "auto"
    model.compile(optimizer="adam", jit_compile=True)  # an explicit choice is kept
    assert model.jit_compile is True


def _onednn_setting(code, **env):
    """TF_ENABLE_ONEDNN_OPTS (or None) in a fresh Python after `code`, started without it unless given in `env`."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run([sys.executable, "-c", f"{code}; import os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"],
                          env={**environ, **env}, capture_output=True, text=True, check=True)
    return done.stdout.split()[-1]


def test_import_zoo_prefers_onednn_before_tensorflow_loads():
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert _onednn_setting("import zoo") == ("1" if x86 else "None")
    assert _onednn_setting("import zoo", TF_ENABLE_ONEDNN_OPTS="0") == "0"  # the user's choice is kept
    already = "import sys, types; sys.modules['tensorflow'] = types.ModuleType('tensorflow'); import zoo"
    assert _onednn_setting(already) == "None"  # too late to matter: TensorFlow read it when it loaded


@needs_tensorflow
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="set on x86-64 only")
def test_tensorflow_runs_onednn_after_import_zoo():
    code = "import zoo, tensorflow; from tensorflow.python.util import _pywrap_util_port as port; print(port.IsMklEnabled())"
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert done.stdout.split()[-1] == "True"


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_a_mixed_precision_fit_turns_back_into_the_float32_model(policy, make_images):
    """`--precision` (zoo.recipe): fit() under a mixed policy computes in 16 bits with float32 weights (mixed_float16
    with Keras' loss scaling); `to_float32` then makes the same model compute what a float32 build computes."""
    from zoo.training import to_float32

    images = make_images(32, size=28)
    labels = np.repeat(np.arange(8), 4)
    try:
        keras.config.set_dtype_policy(policy)
        model = Triplet(conv4((28, 28, 1), filters=4), mining="batch_hard")
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        conv = model.encoder.layers[2]
        assert conv.compute_dtype == policy.split("_")[1] and conv.kernel.dtype == "float32"
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
        before = [ops.convert_to_numpy(w) for w in model.encoder.trainable_weights]
        history = model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
        to_float32(model)
    finally:
        keras.config.set_dtype_policy("float32")
    assert np.isfinite(history.history["loss"][0])
    after = [ops.convert_to_numpy(w) for w in model.encoder.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after))  # a real step
    assert {layer.dtype_policy.name for layer in model._flatten_layers()} == {"float32"}
    reference = conv4((28, 28, 1), filters=4)  # built in float32
    reference.set_weights(model.encoder.get_weights())
    features = model.encoder.predict(images, verbose=0)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, reference.predict(images, verbose=0), rtol=1e-6, atol=1e-6)
    assert model.embedder.predict(images, verbose=0).dtype == np.float32
