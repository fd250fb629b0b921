"""Augmentation layers against hand-worked geometry, and the pipelines in predict() and fit()."""

import keras
import numpy as np
import pytest

from zoo.data import augment


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _ramps(n, h, w):
    """(n, h, w, 2) images whose channel 0 is the column index and channel 1 the row index."""
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return np.broadcast_to(np.stack([xx, yy], -1), (n, h, w, 2)).copy()


def _plane(values):
    """Least-squares (a, b, c) with values[i, j] ~ a * j + b * i + c, and the worst residual."""
    h, w = values.shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    design = np.stack([xx.ravel(), yy.ravel(), np.ones(h * w)], 1)
    coef, *_ = np.linalg.lstsq(design, values.ravel(), rcond=None)
    return coef, np.abs(design @ coef - values.ravel()).max()


class Always(keras.layers.Layer):
    """Test-only wrapper: runs a pipeline with training=True inside predict() (jitted)."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    def call(self, x):
        return self.layer(x, training=True)


def test_random_resized_crop_geometry():
    x = _ramps(16, 20, 30)
    layer = augment.RandomResizedCrop(10, 12, scale=(0.2, 0.6), ratio=(0.5, 2.0), seed=0)
    out = _np(layer(x))
    assert out.shape == (16, 10, 12, 2)
    for image in out:
        (sx, _, x0), err_x = _plane(image[..., 0])
        (_, sy, y0), err_y = _plane(image[..., 1])
        assert err_x < 1e-3 and err_y < 1e-3  # an axis-aligned crop, linearly resampled
        crop_w, crop_h = sx * 12, sy * 10  # input pixels per output pixel times output size
        assert 0.2 - 1e-3 <= crop_w * crop_h / (20 * 30) <= 0.6 + 1e-3
        assert 0.5 - 1e-3 <= crop_w / crop_h <= 2.0 + 1e-3
        left, top = x0 - sx / 2 + 0.5, y0 - sy / 2 + 0.5  # box edges, in pixel-edge coordinates
        assert left >= -1e-3 and left + crop_w <= 30 + 1e-3 and top >= -1e-3 and top + crop_h <= 20 + 1e-3
    assert np.array_equal(_np(augment.RandomResizedCrop(20, 30)(x, training=False)), x)
    assert _np(layer(x, training=False)).shape == (16, 10, 12, 2)
    with pytest.raises(ValueError, match="scale"):
        augment.RandomResizedCrop(8, 8, scale=(0.5, 1.5))


def test_random_affine_geometry():
    x = _ramps(12, 24, 24)
    assert np.allclose(_np(augment.RandomAffine()(x)), x)
    shifted = _np(augment.RandomAffine(translation=0.1, seed=1)(x))
    for image, original in zip(shifted, x):
        d = (image - original)[6:-6, 6:-6]  # interior: nothing read from beyond the edge
        assert np.allclose(d, d[0, 0], atol=1e-3) and np.all(np.abs(d[0, 0]) <= 2.4 + 1e-3)
    rotated = _np(augment.RandomAffine(rotation=20, seed=2)(x))
    angles = []
    for image in rotated:
        (a, b, _), err = _plane(image[6:-6, 6:-6, 0])  # x_in = cx + cos * dx - sin * dy
        assert err < 1e-2 and abs(a * a + b * b - 1) < 1e-3
        angles.append(np.degrees(np.arctan2(-b, a)))
    assert max(np.abs(angles)) <= 20 + 1e-2 and np.std(angles) > 1
    with pytest.raises(ValueError, match="zoom"):
        augment.RandomAffine(zoom=1.0)


def test_random_elastic_distortion_magnitude():
    x = _ramps(8, 64, 64)
    out = _np(augment.RandomElasticDistortion(alpha=10.0, sigma=3.0, seed=0)(x))
    dx = (out - x)[:, 16:-16, 16:-16, 0]  # the displacement itself (a ramp interpolates exactly)
    rms = np.sqrt(np.mean(dx**2))
    assert 0.7 * 0.163 * 10 / 3 < rms < 1.3 * 0.163 * 10 / 3  # sqrt(1/3) / (2 sqrt(pi) sigma) * alpha
    # Smooth: neighbouring displacements are strongly correlated.
    assert np.corrcoef(dx[:, :, :-1].ravel(), dx[:, :, 1:].ravel())[0, 1] > 0.9
    assert np.allclose(_np(augment.RandomElasticDistortion(0.0, 2.0)(x)), x)


def _minmax3(image, op):
    """Naive 3x3 min or max filter over the in-bounds neighbours."""
    h, w = image.shape
    return np.array([[op(image[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]) for j in range(w)] for i in range(h)])


def test_random_stroke_width_against_filters():
    rng = np.random.default_rng(0)
    x = np.where(rng.random((20, 9, 9, 1)) < 0.15, 0.0, 255.0).astype(np.float32)  # dark ink dots
    out = _np(augment.RandomStrokeWidth(factor=0.8, seed=3)(x))
    signs = []
    for image, result in zip(x[..., 0], out[..., 0]):
        thick, thin = _minmax3(image, np.min), _minmax3(image, np.max)
        t_thick = (result - image)[thick != image] / (thick - image)[thick != image]
        t_thin = (result - image)[thin != image] / (thin - image)[thin != image]
        # One blend factor per image, towards exactly one of the two filters.
        assert (np.ptp(t_thick) < 1e-4 and np.allclose(t_thin, 0, atol=1e-4)) or (
            np.ptp(t_thin) < 1e-4 and np.allclose(t_thick, 0, atol=1e-4)
        )
        t = t_thick[0] if abs(t_thick[0]) > 1e-6 else -t_thin[0]
        assert -0.8 - 1e-4 <= t <= 0.8 + 1e-4
        signs.append(np.sign(t))
        assert (result.mean() < image.mean()) == (t > 0)  # thicker dark strokes: a darker image
    assert set(signs) == {-1.0, 1.0}


def test_random_apply():
    x = np.random.default_rng(0).uniform(0, 255, (64, 4, 4, 1)).astype(np.float32)
    invert = keras.layers.Rescaling(-1.0, offset=255.0)
    assert np.allclose(_np(augment.RandomApply(invert, 0.0)(x)), x)
    assert np.allclose(_np(augment.RandomApply(invert, 1.0)(x)), 255 - x)
    out = _np(augment.RandomApply(invert, 0.5, seed=0)(x))
    flipped = np.all(np.isclose(out, 255 - x), axis=(1, 2, 3))
    assert np.all(flipped | np.all(np.isclose(out, x), axis=(1, 2, 3)))
    assert 16 < flipped.sum() < 48


def test_random_background_paints_white_only():
    x = np.full((8, 4, 4, 3), 255.0, np.float32)
    x[:, 0, 0] = (200.0, 10.0, 90.0)  # a drawn pixel: its smallest channel is far below `low`
    x[:, 0, 1] = 242.5  # antialiased edge: halfway between low=230 and white
    out = _np(augment.RandomBackground(low=230.0, seed=0)(x))
    colour = out[:, 3, 3]  # (8, 3) the background colour drawn for each image
    assert np.allclose(out[:, 0, 0], x[:, 0, 0])
    assert np.allclose(out[:, 0, 1], 0.5 * 242.5 + 0.5 * colour, atol=1e-3)
    assert np.allclose(out[:, 1:, 1:], colour[:, None, None], atol=1e-3)
    assert len(np.unique(colour[:, 0].round(3))) == 8 and colour.min() >= 0 and colour.max() <= 255
    assert np.array_equal(_np(augment.RandomBackground()(x, training=False)), x)


PIPELINES = {
    "simclr_rgb": (lambda seed: augment.simclr_rgb(16, solarize=0.2, seed=seed), 3),
    "characters": (lambda seed: augment.characters(20, seed=seed), 1),
    "faces": (lambda seed: augment.faces(16, seed=seed), 3),
    "square_crops": (lambda seed: augment.square_crops(16, seed=seed), 3),
    "icon_styles": (lambda seed: augment.icon_styles(16, seed=seed), 3),
}


@pytest.mark.multibackend
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_in_predict(name):
    build, channels = PIPELINES[name]
    size = 20 if name == "characters" else 16
    x = np.random.default_rng(0).uniform(0, 255, (6, size, size, channels)).astype(np.float32)
    x[0] = 255.0  # a blank page
    model = keras.Sequential([keras.Input((size, size, channels)), Always(build(7))])
    state = [_np(v) for v in model.non_trainable_variables]  # the seed generators
    first, second = model.predict(x, verbose=0), model.predict(x, verbose=0)
    assert first.shape == x.shape and first.dtype == np.float32
    assert first.min() >= -1e-3 and first.max() <= 255 + 1e-3
    assert np.abs(first - second).max() > 1  # fresh randomness per call
    for v, s in zip(model.non_trainable_variables, state):
        v.assign(s)
    assert np.allclose(model.predict(x, verbose=0), first, atol=1e-4)  # a function of the seed state
    twin, other = Always(build(7)), Always(build(8))
    keras.Sequential([keras.Input((size, size, channels)), twin, other])
    assert all(np.array_equal(_np(a), s) for a, s in zip(twin.non_trainable_variables, state))
    assert not all(np.array_equal(_np(a), s) for a, s in zip(other.non_trainable_variables, state))
    if name == "characters":
        assert np.allclose(first[0], 255.0, atol=1e-2)  # paper stays paper: no flip, no dark fill
    assert np.array_equal(_np(build(0)(x, training=False)), x)


@pytest.mark.multibackend
@pytest.mark.parametrize("name", ["simclr_rgb", "characters", "square_crops", "icon_styles"])
def test_pipeline_in_fit(name, tmp_path):
    build, channels = PIPELINES[name]
    size = 20 if name == "characters" else 16
    inputs = keras.Input((size, size, channels))
    hidden = keras.layers.GlobalAveragePooling2D()(build(0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile("sgd", "mse")
    if keras.backend.backend() == "jax":
        assert model.jit_compile  # every layer supports jit (Keras runs TensorFlow on CPU and torch eagerly)
    x = np.random.default_rng(0).uniform(0, 255, (4, size, size, channels)).astype(np.float32)
    model.fit(x, np.zeros((4, 1)), batch_size=2, epochs=1, verbose=0)
    path = str(tmp_path / "aug.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert [type(layer).__name__ for layer in loaded.layers[1].layers] == [
        type(layer).__name__ for layer in model.layers[1].layers
    ]
    assert np.allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-4)
