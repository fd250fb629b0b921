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

from references import ref_clip, ref_hashed_ngrams


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


def test_shared_images_and_captions_count_as_matches():
    keras.utils.set_random_seed(0)
    model = tiny_clip()
    ids = np.array([[0, 0], [0, 1], [1, 2], [2, 2], [3, 3], [4, 4]], np.int32)  # rows 0-1 one image, 2-3 one caption
    image, text = np.random.default_rng(0).normal(size=(2, 6, 16)).astype("float32")
    out = {"image": image / np.linalg.norm(image, axis=1, keepdims=True),
           "text": text / np.linalg.norm(text, axis=1, keepdims=True)}
    positives = np.any(ids[:, None] == ids[None], axis=-1)
    got = keras.ops.convert_to_numpy(model.compute_loss(y=ids, y_pred=out))
    scale = float(keras.ops.convert_to_numpy(model.logit_scale()))
    image, text = (keras.ops.convert_to_numpy(out[k]) for k in ("image", "text"))
    np.testing.assert_allclose(got, ref_clip(image, text, scale, positives), rtol=1e-5)
    assert abs(got - ref_clip(image, text, scale)) > 1e-3  # without ids: CLIP's one match per row


@pytest.mark.slow
@pytest.mark.parametrize("text_tower, tuned_stages", [("transformer", 0), ("ngrams", 1)])
def test_lit_trains_the_last_image_layers_and_the_text_tower_only(monkeypatch, text_tower, tuned_stages):
    """recipes/clip.py --lock-image: the published `clip` entry's image tower stays as it was but for its last layer
    and its last `tuned_stages` stages; its text tower is the start of a text tower of the same kind, and an n-gram
    text tower starts afresh."""
    import dataclasses
    import importlib.util
    from pathlib import Path

    from zoo.finetune import parent_entry

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "recipes"))
    spec = importlib.util.spec_from_file_location("clip_recipe", Path(__file__).resolve().parent.parent / "recipes"
                                                  / "clip.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    parent = parent_entry("clip")
    config = recipe.Config(**{**parent["card"].training["config"], "lock_image": True, "styles": True, "views": 2,
                              "limit": 24, "epochs": 1, "batch_size": 12,
                              "captions": "name+cldr+keywords+category+subcategory", "text_tower": text_tower,
                              "text_buckets": 512, "tuned_stages": tuned_stages})
    with pytest.raises(ValueError, match="--init"):
        recipe.build(config)
    with pytest.raises(ValueError, match="--lock-image"):
        recipe.build(dataclasses.replace(config, lock_image=False, tuned_stages=1))
    model, sampler, _ = recipe.build(config, parent=parent)
    head = model.encoder  # what trains of the image tower: from the cut to the last layer
    trained = {id(v) for v in head.weights}
    locked = [v for v in model.image_tower.weights if id(v) not in trained]
    assert len(locked) + len(head.weights) == len(model.image_tower.weights)
    assert len(head.trainable_weights) == 2 + 9 * tuned_stages  # Dense; a stage: 3 convs, 3 BN (gamma, beta)

    def values(variables):
        return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]

    locked_before, head_before = values(locked), values(head.trainable_weights)
    text_before = [w.copy() for w in model.text_encoder.get_weights()]
    parent_text = keras.saving.load_model(parent["folder"] / parent["card"].towers["text_encoder"]["keras"],
                                          compile=False).get_weights()
    same = [w.shape for w in parent_text] == [w.shape for w in text_before] and \
        all(np.array_equal(a, b) for a, b in zip(parent_text, text_before))
    assert same == (text_tower == "transformer")
    views = sampler.views()
    assert views.shape == (2, 24, *head.inputs[0].shape[1:])
    assert not np.allclose(views[0], views[1])  # view 1 is augmented
    (features, tokens), ids = sampler[0]
    assert features.shape == (12, *views.shape[2:]) and tokens.shape == (12, config.context_length)
    model.fit(sampler, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(locked_before, values(locked)))  # locked
    assert not any(np.allclose(a, b) for a, b in zip(head_before, values(head.trainable_weights)))  # all trained
    assert not all(np.allclose(a, b) for a, b in zip(text_before, model.text_encoder.get_weights()))
    # The published image tower is the locked part followed by the trained head.
    x = np.asarray(recipe.resize(recipe.zoo.data.load("emoji", "test")["images"][:3], config.image_size))
    full = keras.ops.convert_to_numpy(model.image_tower(x))
    trunk = keras.Model(model.image_tower.inputs[0], recipe.tuned_part(model.image_tower, tuned_stages))
    np.testing.assert_allclose(full, keras.ops.convert_to_numpy(head(trunk(x))), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="--tuned-stages 4: expected 0..3"):
        recipe.tuned_part(model.image_tower, 4)
    assert dataclasses.asdict(config)["lock_image"] is True


@pytest.mark.multibackend
def test_ngram_text_tower_is_the_mean_of_its_hashed_ngrams():
    keras.utils.set_random_seed(3)
    texts = ["grinning face", "flag: Germany", "a", "", "Ünïcödé ✓", "x" * 40]
    layer = backbones.HashedNgramEmbedding(buckets=97, width=6, sizes=(1, 2, 3, 5))
    tokens = Tokenizer(24).encode(texts)  # the long text fills every position: no padding
    got = keras.ops.convert_to_numpy(layer(tokens))
    table = keras.ops.convert_to_numpy(layer.table.embeddings).astype(np.float64)
    np.testing.assert_allclose(got, ref_hashed_ngrams(tokens, table, (1, 2, 3, 5)), rtol=1e-5, atol=1e-6)
    # Padding adds no n-gram: the same texts in a longer context give the same features.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(Tokenizer(48).encode(texts[:-1]))), got[:-1],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="buckets"):
        backbones.HashedNgramEmbedding(buckets=2 ** 23, width=4)


def test_ngram_text_tower_round_trips_through_keras_files(tmp_path):
    keras.utils.set_random_seed(4)
    tower = backbones.embedder_from(backbones.text_ngrams(16, buckets=64, width=8, output_dim=4))
    tokens = Tokenizer(16).encode(["smiling face", "smile", "flag"])
    tower.save(tmp_path / "text.keras")
    loaded = keras.saving.load_model(tmp_path / "text.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(tokens, verbose=0), tower.predict(tokens, verbose=0), atol=1e-6)
