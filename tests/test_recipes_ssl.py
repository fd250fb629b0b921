"""Self-supervised recipes with --smoke: train, evaluate the few-shot protocol, publish; the comparison table."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from zoo.runtime import OnnxEmbedder

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
ENTRIES = {"simclr": "SimCLR", "barlow_twins": "BarlowTwins", "context_prediction": "ContextPrediction",
           "micle": "MICLe"}


def load_recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl")
    cards = {}
    for name in ENTRIES:
        recipe = load_recipe(name)
        cards[name] = (recipe, recipe.main(["--smoke", "--root", str(root / "exports"),
                                            "--workdir", str(root / "work" / name)]))
    return root, cards


@pytest.mark.parametrize("name", ENTRIES)
def test_smoke_run_publishes_the_few_shot_protocol(name, published):
    root, cards = published
    recipe, card = cards[name]
    folder = root / "exports" / name
    assert card.method == ENTRIES[name] and card.protocol == "self_supervised"
    assert card.input_shape == (28, 28, 1)
    assert card.embedding_dim == (9 * 64 if name == "context_prediction" else 64)  # 9 grid patches
    for way, shot in recipe.SETTINGS:
        result = card.metrics[f"{way}way{shot}shot"]
        assert 0.0 <= result["mean"] <= 1.0 and result["ci95"] > 0.0
        assert result["episodes"] == recipe.SMOKE["test_episodes"]
    assert 0.0 <= card.metrics["recall@1"] <= 1.0 and 0.0 <= card.metrics["lake_oneshot_runs"] <= 1.0
    assert card.metrics["test_characters"] == recipe.SMOKE["test_classes"]
    assert card.primary_metric == "5way1shot"
    config = card.training["config"]
    steps = recipe.SMOKE["epochs"] * recipe.SMOKE["steps_per_epoch"]
    assert card.training["steps"] == steps and config["train_images"] == recipe.SMOKE["train_images"]
    assert np.isfinite(card.training["final_loss"]) and card.training["minutes"] > 0
    assert card.recipe == f"python recipes/{name}.py --smoke"
    assert json.loads((folder / "card.json").read_text())["metrics"] == card.metrics
    # The published graph is the embedder alone: it reproduces its golden outputs under onnxruntime.
    golden = np.load(folder / "golden.npz")
    np.testing.assert_allclose(OnnxEmbedder(folder).embed(golden["embedder__inputs"]),
                               golden["embedder__embeddings"], atol=1e-4)


def test_micle_pairs_come_from_character_groups(published):
    _, cards = published
    assert "grouped by character" in cards["micle"][1].dataset
    assert "labels unused" in cards["simclr"][1].dataset


def test_ssl_table_measures_every_published_entry_and_the_floor(published, tmp_path):
    root, _ = published
    readme = tmp_path / "README.md"
    readme.write_text("# Recipes\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    table = load_recipe("ssl_table")
    argv = ["--root", str(root / "exports"), "--readme", str(readme), "--episodes", "20", "--classes", "30"]
    text = table.main(argv)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| raw pixels (floor)", "| conv4, random weights",
                                                 "| `context_prediction`", "| `simclr`", "| `barlow_twins`", "| `micle`"]
    # The floor's features by hand: unit vectors of the ink-bright pixels.
    import zoo.data

    data = zoo.data.load("omniglot", "evaluation")
    pixels = table.raw_pixels(data["images"][:2])
    x = 255.0 - data["images"][:2].reshape(2, -1).astype(np.float64)
    np.testing.assert_allclose(pixels, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-5)
    # Rewriting replaces the section and keeps the other helper's.
    table.main(argv)
    written = readme.read_text()
    assert written.count("<!-- ssl:start -->") == 1 and "<!-- other:start -->\nkept\n<!-- other:end -->" in written
