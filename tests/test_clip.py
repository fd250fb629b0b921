"""CLIP: a short run that learns and logs the scale, its loss against numpy, the clamp of the temperature,
the text tower's padding. Round trips, two fit() steps and the embedders: test_methods.py; the recipe:
test_recipes.py."""

import math

import keras
import numpy as np
import pytest

from zoo import backbones
from zoo.data.augment import square_crops
from zoo.methods.clip import CLIP
from zoo.runtime import Tokenizer

from references import ref_clip


def tiny_clip(context_length=16, dim=16, augment=None):
    image_tower = backbones.small_resnet((16, 16, 3), widths=(8, 16), output_dim=dim)
    text_tower = backbones.text_transformer(Tokenizer.vocab_size, context_length, 16, 1, 2, output_dim=dim)
    return CLIP(image_tower, text_tower, augment=augment)


def pairs(n=8, context_length=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, 16, 16, 3)).astype("float32")
    return images, Tokenizer(context_length).encode([f"caption number {i}" for i in range(n)])


@pytest.mark.multibackend
def test_training_steps_lower_the_loss_and_track_the_scale():
    keras.utils.set_random_seed(0)
    model = tiny_clip(augment=square_crops(16, scale=(0.9, 1.0), seed=0))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    images, tokens = pairs()
    history = model.fit((images, tokens), batch_size=8, epochs=6, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"]).all()
    assert history["logit_scale"][0] == pytest.approx(1 / 0.07, rel=0.01)
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.multibackend
def test_loss_is_the_clip_function_of_the_two_towers():
    keras.utils.set_random_seed(1)
    model = tiny_clip()
    images, tokens = pairs()
    out = model((images, tokens))
    expected = ref_clip(keras.ops.convert_to_numpy(out["image"]), keras.ops.convert_to_numpy(out["text"]), 1 / 0.07)
    got = model.compute_loss(y_pred=out)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5)


@pytest.mark.multibackend
def test_logit_scale_is_clamped_at_100():
    model = tiny_clip()
    model.log_logit_scale.assign(math.log(1000.0))
    assert float(keras.ops.convert_to_numpy(model.logit_scale())) == pytest.approx(100.0, rel=1e-5)


def test_towers_must_share_a_width():
    with pytest.raises(ValueError, match="same width"):
        CLIP(backbones.small_resnet((16, 16, 3), widths=(8,), output_dim=16),
             backbones.text_transformer(context_length=8, width=16, depth=1, heads=2, output_dim=8))


def test_text_tower_ignores_padding():
    # Pad tokens (id 0) are masked in attention and pooling: changing their embedding changes nothing.
    keras.utils.set_random_seed(2)
    encoder = backbones.text_transformer(context_length=16, width=16, depth=1, heads=2)
    tower = backbones.embedder_from(encoder)
    tokens = Tokenizer(16).encode(["abc", "a longer caption"])
    before = tower.predict(tokens, verbose=0)
    embedding = next(l for l in encoder.layers if isinstance(l, backbones.TokenAndPositionEmbedding)).token
    table = keras.ops.convert_to_numpy(embedding.embeddings).copy()
    table[0] = np.random.default_rng(0).normal(size=table.shape[1]) * 10
    embedding.embeddings.assign(table)
    np.testing.assert_allclose(tower.predict(tokens, verbose=0), before, atol=1e-5)
    table[ord("a") + 2] += np.random.default_rng(1).normal(size=table.shape[1])  # a real token does matter
    embedding.embeddings.assign(table)
    assert not np.allclose(tower.predict(tokens, verbose=0), before, atol=1e-5)
