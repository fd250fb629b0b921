"""The supervised recipes: --smoke runs publish a card with the protocol's metrics; interrupted runs resume."""

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import keras
import pytest

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

EXPECTED = {
    "facenet_triplet": ("Triplet", "verification", "verification_accuracy",
                        {"verification_accuracy", "auc", "tar_at_far_1e-3", "recall@1"}),
    "deepface_softmax": ("Classifier", "verification", "verification_accuracy",
                         {"verification_accuracy", "auc", "tar_at_far_1e-3", "recall@1"}),
    "siamese_contrastive": ("Siamese", "few_shot", "oneshot_accuracy",
                            {"oneshot_accuracy", "auc", "verification_accuracy", "tar_at_far_1e-3"}),
}


def load_recipe(name, monkeypatch):
    """Import recipes/<name>.py as a module (the recipes folder on sys.path, as when run as a script)."""
    monkeypatch.syspath_prepend(str(RECIPES))
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def epochs_logged(workdir):
    with open(Path(workdir) / "log.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_smoke_run_publishes_a_card_with_the_metrics(name, tmp_path, monkeypatch):
    method, protocol, primary, keys = EXPECTED[name]
    card = load_recipe(name, monkeypatch).main(["--smoke", "--root", str(tmp_path), "--workdir", str(tmp_path / "run")])
    assert (card.name, card.method, card.protocol, card.primary_metric) == (name, method, protocol, primary)
    assert keys <= set(card.metrics)
    for key in keys:
        assert 0.0 <= card.metrics[key] <= 1.0
    assert card.threshold == card.metrics["threshold"] and card.threshold > 0
    on_disk = json.loads((tmp_path / name / "card.json").read_text())
    assert on_disk["metrics"][primary] == card.metrics[primary]
    assert epochs_logged(tmp_path / "run") == [0, 1]
    assert not (tmp_path / "run" / "backup").exists()  # removed once training completed


class Interrupted(Exception):
    """Stands for a kill arriving after an epoch's checkpoint was written."""


def test_interrupted_run_resumes_from_the_next_epoch(tmp_path, monkeypatch):
    recipe = load_recipe("facenet_triplet", monkeypatch)
    config = dataclasses.replace(recipe.Config(), **{**recipe.SMOKE, "epochs": 3})
    workdir = str(tmp_path / "run")
    original = recipe.training_callbacks

    def interrupt_after_first_epoch(workdir, fresh=False):
        def stop(epoch, logs=None):
            if epoch == 0:
                raise Interrupted
        # After BackupAndRestore and the CSV log, as a kill after the epoch's checkpoint would be.
        return original(workdir, fresh) + [keras.callbacks.LambdaCallback(on_epoch_end=stop)]

    monkeypatch.setattr(recipe, "training_callbacks", interrupt_after_first_epoch)
    with pytest.raises(Interrupted):
        recipe.train(config, workdir)
    assert epochs_logged(workdir) == [0]
    assert (tmp_path / "run" / "backup").exists()

    monkeypatch.setattr(recipe, "training_callbacks", original)
    model, _, images_seen = recipe.train(config, workdir)
    assert epochs_logged(workdir) == [0, 1, 2]  # the second run started at epoch 1
    assert images_seen == 2 * config.steps_per_epoch * config.p * config.k
    assert int(model.optimizer.iterations) == 3 * config.steps_per_epoch  # the optimiser state came back too
    assert not (tmp_path / "run" / "backup").exists()


def test_ablation_smoke_writes_the_table_between_the_markers(tmp_path, monkeypatch):
    ablation = load_recipe("ablation_mining", monkeypatch)
    # Two rows keep the test short and still exercise both recipes (Triplet variants and softmax).
    monkeypatch.setattr(ablation, "VARIANTS", [ablation.VARIANTS[3], ablation.VARIANTS[-1]])
    readme = tmp_path / "README.md"
    readme.write_text(f"# Recipes\n\nbefore\n\n{ablation.START}\nstale table\n{ablation.END}\n\nafter\n")
    results = ablation.main(["--smoke", "--workdir", str(tmp_path / "runs"), "--readme", str(readme),
                             "--out", str(tmp_path / "ablation.json")])
    text = readme.read_text()
    assert text.startswith("# Recipes\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "stale table" not in text and text.count(ablation.START) == 1
    rows = [line for line in text.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == ["batch-hard + hard-cluster", "softmax (DeepFace-style)"]
    saved = json.loads((tmp_path / "ablation.json").read_text())
    for row, metrics in results.items():
        assert saved["results"][row]["verification_accuracy"] == metrics["verification_accuracy"]
        assert f"{metrics['auc']:.3f}" in rows[list(results).index(row)]
        assert metrics["images_per_s"] > 0


def test_train_only_then_trained_publishes_those_weights(tmp_path, monkeypatch):
    # Train on one machine (--train-only), publish on another (--trained): the same weights, checked.
    recipe = load_recipe("siamese_contrastive", monkeypatch)
    trained = tmp_path / "trained"
    with pytest.raises(SystemExit) as stop:
        recipe.main(["--smoke", "--train-only", "--workdir", str(trained)])
    assert stop.value.code == 0
    record = json.loads((trained / "trained.json").read_text())
    assert record["epochs"] == 2 and record["backend"] == keras.backend.backend()

    card = recipe.main(["--smoke", "--trained", str(trained), "--root", str(tmp_path / "exports"),
                        "--workdir", str(tmp_path / "publish")])
    assert card.recipe == "python recipes/siamese_contrastive.py --smoke"
    assert card.training["machine"] == record["machine"] and card.training["backend"] == record["backend"]
    assert not (tmp_path / "publish" / "log.csv").exists()  # nothing was trained here
    model, sampler, _ = recipe.build(recipe.Config(**recipe.SMOKE))
    model.load_weights(str(trained / "trained.weights.h5"))
    published = keras.saving.load_model(tmp_path / "exports" / "siamese_contrastive" / "embedder.keras")
    images = sampler.images[:8].astype("float32")
    assert (published.predict(images, verbose=0) == model.embedder.predict(images, verbose=0)).all()

    with pytest.raises(ValueError, match="trained with config"):
        recipe.main(["--smoke", "--margin", "0.5", "--trained", str(trained), "--root", str(tmp_path / "x")])
    with open(trained / "trained.weights.h5", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        recipe.main(["--smoke", "--trained", str(trained), "--root", str(tmp_path / "x")])
    with pytest.raises(FileNotFoundError, match="train-only"):
        recipe.main(["--smoke", "--trained", str(tmp_path / "nowhere"), "--root", str(tmp_path / "x")])
