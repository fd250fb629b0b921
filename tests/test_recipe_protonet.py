"""recipes/protonet.py --smoke: trains, evaluates the few-shot protocol, publishes a loadable entry."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import zoo.data
from zoo.runtime import OnnxEmbedder, few_shot_classify

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "protonet.py"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("recipe_protonet", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    tmp = tmp_path_factory.mktemp("protonet")
    card = recipe.main(["--smoke", "--root", str(tmp / "exports"), "--workdir", str(tmp / "work")])
    return recipe, card, tmp / "exports" / "protonet"


def test_card_holds_the_few_shot_protocol_and_the_curve(smoke):
    recipe, card, folder = smoke
    assert card.method == "ProtoNet" and card.protocol == "few_shot" and card.input_shape == (28, 28, 1)
    assert card.embedding_dim == 64  # conv4 on 28x28: 64 channels at 1x1
    for suffix in ("", "_unnormalised"):
        for way, shot in recipe.SETTINGS:
            result = card.metrics[f"{way}way{shot}shot{suffix}"]
            assert 0.0 <= result["mean"] <= 1.0 and result["ci95"] > 0.0
            assert result["episodes"] == recipe.SMOKE["test_episodes"]
        assert 0.0 <= card.metrics[f"lake_oneshot_runs{suffix}"] <= 1.0
    assert card.primary_metric == "lake_oneshot_runs"
    curve = card.training["curve"]
    epochs, per_epoch = recipe.SMOKE["epochs"], recipe.SMOKE["episodes_per_epoch"]
    assert curve["episodes"] == [per_epoch * (e + 1) for e in range(epochs)]
    assert len(curve[recipe.CURVE_KEY]) == len(curve["loss"]) == epochs
    assert card.training["episodes"] == epochs * per_epoch
    assert json.loads((folder / "card.json").read_text())["metrics"] == card.metrics


def test_published_onnx_classifies_like_the_keras_embedder(smoke):
    _, card, folder = smoke
    import keras

    keras_embedder = keras.saving.load_model(folder / "embedder.keras", safe_mode=True)
    test = zoo.data.load("omniglot", "evaluation")
    # One 5-way 1-shot episode: drawer 1 is the support, drawers 2..4 the queries.
    classes = np.unique(test["labels"])[:5]
    support = np.stack([np.flatnonzero(test["labels"] == c)[0] for c in classes])
    queries = np.concatenate([np.flatnonzero(test["labels"] == c)[1:4] for c in classes])
    predicted = few_shot_classify(OnnxEmbedder(folder), test["images"][support], classes, test["images"][queries])
    s = keras_embedder.predict(test["images"][support].astype("float32"), verbose=0)
    q = keras_embedder.predict(test["images"][queries].astype("float32"), verbose=0)
    nearest = classes[np.argmin([[np.sum((a - b) ** 2) for b in s] for a in q], axis=1)]
    np.testing.assert_array_equal(predicted, nearest)


def test_bad_class_counts_are_refused(smoke, tmp_path):
    recipe, _, _ = smoke
    with pytest.raises(ValueError, match="asked for 5000 classes"):
        recipe.main(["--smoke", "--train-classes", "5000", "--root", str(tmp_path), "--workdir", str(tmp_path)])
