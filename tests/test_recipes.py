"""Every recipe, one shape: trained with --train-only on JAX, published with --trained on TensorFlow, with the
protocol's metrics (zoo.protocols) in the card; one-step publishing from any backend; resume; the tables."""

import argparse
import csv
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import zoo.losses
import zoo.training
from zoo import protocols, registry
from zoo.runtime import OnnxEmbedder

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TABLES = {"ablation_mining", "ssl_table", "clip_shift"}  # recipes that make tables, not entries
# Recipes that convert an entry from a package's weights (checked in test_convert_dlib.py), not train one.
IMPORTS = {p.stem for p in RECIPES.glob("import_*.py")}


def load_recipe(name, monkeypatch=None):
    """Import recipes/<name>.py as a module (the recipes folder on sys.path, as when run as a script)."""
    if monkeypatch is not None:
        monkeypatch.syspath_prepend(str(RECIPES))
    elif str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_runs() -> dict:
    """entry name -> (script, preset) of every entry a recipe makes: each preset of a recipe with presets, else
    the script's own Config under its default name."""
    runs = {}
    for script in sorted(p.stem for p in RECIPES.glob("*.py") if p.stem not in TABLES | IMPORTS):
        module = load_recipe(script)
        for preset, spec in (getattr(module, "PRESETS", None) or {None: None}).items():
            config = spec.config() if spec else module.Config()
            runs[config.name] = (script, preset)
    return runs


RUNS = recipe_runs()
# Some of each protocol's metrics (their names are defined once, in zoo.protocols).
PROTOCOL_METRICS = {
    "verification": {"verification_accuracy", "auc", "tar@far=1e-3", "threshold", "recall@1"},
    "few_shot": {"5way1shot", "20way5shot", "lake_oneshot_runs", "recall@1"},
    "zero_shot": {"image_to_text_recall@5", "zero_shot_category_top1", "linear_probe_category_top1"},
}


def test_every_published_entry_is_made_by_a_recipe_run():
    """Each recipe run's entry is published, and each published card's command names a recipe (and a preset of
    it) that exists: the card's `recipe` replays the entry."""
    published = set(registry.list_models())
    assert set(RUNS) <= published
    for name in published:
        command = registry.info(name).recipe.split()
        script = Path(command[1]).stem
        assert (RECIPES / f"{script}.py").is_file(), (name, command)
        if "--preset" in command:
            assert (script, command[command.index("--preset") + 1]) in RUNS.values(), (name, command)


def smoke_args(name) -> list:
    script, preset = RUNS[name]
    return (["--preset", preset] if preset else []) + ["--smoke"]


def build_smoke_model(recipe, name):
    """The training model of an entry's --smoke config (weights fresh)."""
    preset = RUNS[name][1]
    if preset is None:
        return recipe.build(recipe.Config(**recipe.SMOKE))[0]
    spec = recipe.PRESETS[preset]
    return recipe.build(spec.config(**spec.smoke), preset)[0]


def check_card(name, card, folder):
    """What every smoke card holds: the published entry's method, protocol and primary metric, the protocol's
    metrics, every format."""
    published = registry.info(name)
    assert (card.name, card.method, card.protocol, card.primary_metric, card.trained_with_labels) == (
        name, published.method, published.protocol, published.primary_metric, published.trained_with_labels)
    assert PROTOCOL_METRICS[card.protocol] <= set(card.metrics)
    for key in PROTOCOL_METRICS[card.protocol] - {"threshold"}:
        assert 0.0 <= protocols.Protocol.value(card.metrics[key]) <= 1.0, key
    assert card.recipe == " ".join(["python", f"recipes/{RUNS[name][0]}.py", *smoke_args(name)])
    assert card.int8 is None  # --smoke publishes without int8 (its gate runs the full held-out protocol)
    registry.verify_files(folder, card)
    for spec in card.towers.values():
        assert {spec["keras"], spec["onnx"], spec["tflite"], f"{spec['saved_model']}/saved_model.pb"} <= set(card.files)
    role = next(iter(card.towers))
    with np.load(folder / "golden.npz") as golden:
        np.testing.assert_allclose(OnnxEmbedder(folder).embed(golden[f"{role}__inputs"]),
                                   golden[f"{role}__embeddings"], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNS)
def test_train_only_on_jax_then_trained_on_tensorflow_publishes_those_weights(name, tmp_path, monkeypatch):
    trained = tmp_path / "trained"
    script = RUNS[name][0]
    done = subprocess.run([sys.executable, str(RECIPES / f"{script}.py"), *smoke_args(name), "--train-only",
                           "--workdir", str(trained), "--root", str(tmp_path / "not-published")],
                          env=dict(os.environ, KERAS_BACKEND="jax"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "not-published").exists()  # --train-only publishes nothing
    record = json.loads((trained / "trained.json").read_text())
    assert record["backend"] == "jax" and record["epochs"] >= 1 and record["images"] > 0

    recipe = load_recipe(script, monkeypatch)
    card = recipe.main([*smoke_args(name), "--trained", str(trained), "--root", str(tmp_path / "exports"),
                        "--workdir", str(tmp_path / "publish")])
    folder = tmp_path / "exports" / name
    check_card(name, card, folder)
    assert card.training["backend"] == "jax" and card.training["machine"] == record["machine"]
    assert not (tmp_path / "publish" / "log.csv").exists()  # nothing was trained here
    # The published tower is the JAX-trained one.
    model = build_smoke_model(recipe, name)
    model.load_weights(str(trained / "trained.weights.h5"))
    with np.load(folder / "golden.npz") as golden:
        x = golden[f"{next(iter(card.towers))}__inputs"]
    published = keras.saving.load_model(folder / next(iter(card.towers.values()))["keras"], safe_mode=True)
    np.testing.assert_allclose(published.predict(x, verbose=0), model.embedder.predict(x, verbose=0), atol=1e-6)


@pytest.mark.slow
@pytest.mark.multibackend
def test_smoke_trains_and_publishes_in_one_step_on_any_backend(tmp_path, monkeypatch):
    """protonet --smoke on this backend (JAX in `make test-jax`): trains, evaluates, publishes in one process;
    then --trained on the published entry publishes it again with the same numbers."""
    recipe = load_recipe("protonet", monkeypatch)
    card = recipe.main(["--smoke", "--root", str(tmp_path / "exports"), "--workdir", str(tmp_path / "work")])
    check_card("protonet", card, tmp_path / "exports" / "protonet")
    assert card.training["backend"] == keras.backend.backend()
    with open(tmp_path / "work" / "log.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1]
    assert not (tmp_path / "work" / "backup").exists()  # removed once training completed
    epochs, per_epoch = recipe.SMOKE["epochs"], recipe.SMOKE["episodes_per_epoch"]
    assert card.training["curve"]["episodes"] == [per_epoch * (e + 1) for e in range(epochs)]
    for way, shot in protocols.FEW_SHOT_SETTINGS:  # the raw features the loss was trained on, too
        assert 0.0 <= card.metrics[f"{way}way{shot}shot_unnormalised"]["mean"] <= 1.0
    assert 0.0 <= card.metrics["lake_oneshot_runs_unnormalised"] <= 1.0

    again = recipe.main(["--smoke", "--trained", str(tmp_path / "exports" / "protonet"),
                         "--root", str(tmp_path / "again"), "--workdir", str(tmp_path / "work2")])
    assert again.metrics == card.metrics and again.recipe == card.recipe
    assert again.training == {**card.training, "republished_from": {
        "entry": "protonet", "created": card.created, "sha256": card.files["embedder.keras"]}}


# On TensorFlow only: what is backend-specific (a bfloat16 fit, then float32 layers) runs on JAX too in
# test_training_paths' mixed-precision test; the card, trained.json and --trained checks are the same code.
@pytest.mark.slow
def test_precision_mixed_bfloat16_trains_in_16_bits_and_publishes_float32(tmp_path, monkeypatch):
    """protonet --smoke --precision mixed_bfloat16: the fit runs with bfloat16 layers, the card records the
    precision and the command, and what is evaluated and published computes in float32 (no bfloat16 in the ONNX
    graph, float32 layers in the .keras file)."""
    import onnx

    recipe = load_recipe("protonet", monkeypatch)
    seen = []
    original = zoo.training.to_float32

    def recording(model):  # the layers' policies of the model that fit() trained
        seen.append({layer.dtype_policy.name for layer in model._flatten_layers()})
        original(model)

    monkeypatch.setattr(zoo.training, "to_float32", recording)
    try:
        card = recipe.main(["--smoke", "--precision", "mixed_bfloat16", "--root", str(tmp_path / "exports"),
                            "--workdir", str(tmp_path / "work")])
    finally:
        keras.config.set_dtype_policy("float32")  # whatever happened, later tests build in float32
    assert seen and "mixed_bfloat16" in seen[0]
    assert card.training["precision"] == "mixed_bfloat16" and "--precision mixed_bfloat16" in card.recipe
    assert json.loads((tmp_path / "work" / "trained.json").read_text())["precision"] == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    folder = tmp_path / "exports" / "protonet"
    published = keras.saving.load_model(folder / "embedder.keras", compile=False)
    assert {layer.dtype_policy.name for layer in published._flatten_layers()} == {"float32"}
    graph = onnx.load(str(folder / "embedder.onnx")).graph
    types = [t.type.tensor_type.elem_type for t in [*graph.input, *graph.output, *graph.value_info]]
    types += [t.data_type for t in graph.initializer]
    types += [a.i for n in graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    assert onnx.TensorProto.BFLOAT16 not in types and onnx.TensorProto.FLOAT16 not in types
    # --trained names the precision the weights were trained with, so that the card's command reproduces them
    for trained in (tmp_path / "work", folder):
        with pytest.raises(ValueError, match="trained with --precision mixed_bfloat16, not this run's float32"):
            recipe.main(["--smoke", "--trained", str(trained), "--root", str(tmp_path / "again")])
    again = recipe.main(["--smoke", "--precision", "mixed_bfloat16", "--trained", str(tmp_path / "work"),
                         "--root", str(tmp_path / "again"), "--workdir", str(tmp_path / "work2")])
    assert again.training["precision"] == "mixed_bfloat16" and again.metrics == card.metrics


@pytest.mark.slow
def test_trained_refuses_another_config_tampered_or_missing_weights(tmp_path, monkeypatch):
    recipe = load_recipe("siamese_contrastive", monkeypatch)
    trained = tmp_path / "trained"
    with pytest.raises(SystemExit) as stop:
        recipe.main(["--smoke", "--train-only", "--workdir", str(trained)])
    assert stop.value.code == 0
    with pytest.raises(ValueError, match="trained with config"):
        recipe.main(["--smoke", "--margin", "0.5", "--trained", str(trained), "--root", str(tmp_path / "x")])
    with open(trained / "trained.weights.h5", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        recipe.main(["--smoke", "--trained", str(trained), "--root", str(tmp_path / "x")])
    with pytest.raises(FileNotFoundError, match="train-only"):
        recipe.main(["--smoke", "--trained", str(tmp_path / "nowhere"), "--root", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


NON_TRIPLET_LOSSES = [n for n in zoo.losses.label_losses() if n not in ("semi_hard", "batch_hard", "batch_all")]


@pytest.mark.slow
@pytest.mark.parametrize("loss", NON_TRIPLET_LOSSES)
def test_facenet_recipe_trains_and_publishes_with_every_registered_loss(loss, tmp_path, monkeypatch):
    """`--loss NAME`: the face recipe trains any registered loss of labelled batches through MetricLearning and
    publishes it; the card names the method, the loss and its options."""
    recipe = load_recipe("face", monkeypatch)
    card = recipe.main(["--preset", "facenet_triplet", "--smoke", "--loss", loss, "--root", str(tmp_path / "exports"),
                        "--workdir", str(tmp_path / "work")])
    folder = tmp_path / "exports" / "facenet_triplet"
    registry.verify_files(folder, card)
    assert (card.method, card.protocol, card.primary_metric) == ("MetricLearning", "verification",
                                                                 "verification_accuracy")
    assert card.recipe == f"python recipes/face.py --preset facenet_triplet --smoke --loss {loss}"
    assert card.extras["loss"] == loss and card.extras["loss_options"] == zoo.losses.get_loss(loss).options
    assert card.training["config"]["loss"] == card.training["config"]["mining"] == loss
    assert np.isfinite(card.training["final_loss"])
    for key in PROTOCOL_METRICS["verification"] - {"threshold"}:
        assert 0.0 <= protocols.Protocol.value(card.metrics[key]) <= 1.0, key
    with np.load(folder / "golden.npz") as golden:
        np.testing.assert_allclose(OnnxEmbedder(folder).embed(golden["embedder__inputs"]),
                                   golden["embedder__embeddings"], atol=1e-5)


def test_facenet_recipe_takes_mining_as_the_older_name_of_loss(monkeypatch):
    recipe = load_recipe("face", monkeypatch)

    def parsed(*flags):
        config, args = zoo.training.parse_config(recipe.PRESETS,
                                                 argv=["--preset", "facenet_triplet", "--smoke", *flags])
        return recipe.with_one_loss(config, args)

    for flags in (["--mining", "batch_all"], ["--loss", "batch_all"], ["--loss", "batch_all", "--mining", "batch_all"]):
        config = parsed(*flags)
        assert (config.loss, config.mining) == ("batch_all", "batch_all"), flags
    assert (parsed().loss, parsed().mining) == ("semi_hard", "semi_hard")
    with pytest.raises(ValueError, match="--mining is the older name of --loss"):
        parsed("--loss", "batch_all", "--mining", "batch_hard")
    with pytest.raises(SystemExit):  # argparse: not a registered loss of labelled batches
        parsed("--loss", "hardest")
    # A config that names only `mining` (the ablation's variants) trains that miner; a published card's config
    # (no `loss`) is the default's.
    preset = recipe.PRESETS["facenet_triplet"]
    model = recipe.build(dataclasses.replace(preset.config(**preset.smoke), mining="batch_hard"), "facenet_triplet")[0]
    assert type(model).__name__ == "Triplet" and model.mining == "batch_hard"
    assert zoo.training.same_config(registry.info("facenet_triplet").training["config"],
                                  parsed("--epochs", "50", "--widths", "32-64-128-256", "--steps-per-epoch", "100",
                                         "--p", "32", "--k", "4", "--embedding-dim", "128", "--identities", "0"))


class Interrupted(Exception):
    """Stands for a kill arriving after an epoch's checkpoint was written."""


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_the_next_epoch(tmp_path, monkeypatch):
    recipe = load_recipe("face", monkeypatch)
    preset = recipe.PRESETS["facenet_triplet"]
    config = dataclasses.replace(preset.config(), **{**preset.smoke, "epochs": 3})
    args = argparse.Namespace(workdir=str(tmp_path / "run"), fresh=False, trained=None, train_only=False)
    original = zoo.training.training_callbacks

    def interrupt_after_first_epoch(workdir, fresh=False):
        def stop(epoch, logs=None):
            if epoch == 0:
                raise Interrupted
        # After BackupAndRestore and the CSV log, as a kill after the epoch's checkpoint would be.
        return original(workdir, fresh) + [keras.callbacks.LambdaCallback(on_epoch_end=stop)]

    def fit(model, sampler, callbacks):
        return zoo.training.train(model, sampler, config, args, images_per_epoch=config.steps_per_epoch * 8,
                                  callbacks=callbacks, shuffle=False)

    monkeypatch.setattr(zoo.training, "training_callbacks", interrupt_after_first_epoch)
    with pytest.raises(Interrupted):
        fit(*recipe.build(config, "facenet_triplet")[:3])
    monkeypatch.setattr(zoo.training, "training_callbacks", original)
    model, sampler, callbacks, _ = recipe.build(config, "facenet_triplet")
    run = fit(model, sampler, callbacks)
    with open(tmp_path / "run" / "log.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2]  # the second run started at epoch 1
    assert run.epochs == 2 and run.images == 2 * config.steps_per_epoch * 8  # this process's share
    assert int(model.optimizer.iterations) == 3 * config.steps_per_epoch  # the optimiser state came back too
    assert not (tmp_path / "run" / "backup").exists()


def test_bad_class_counts_are_refused(tmp_path, monkeypatch):
    recipe = load_recipe("protonet", monkeypatch)
    with pytest.raises(ValueError, match="asked for 5000 classes"):
        recipe.main(["--smoke", "--train-classes", "5000", "--root", str(tmp_path), "--workdir", str(tmp_path)])


@pytest.mark.slow
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


@pytest.mark.slow
def test_ssl_table_measures_the_published_entries_and_the_floor(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("# Recipes\n\n<!-- other:start -->\nkept\n<!-- other:end -->\n")
    table = load_recipe("ssl_table", monkeypatch)
    argv = ["--readme", str(readme), "--episodes", "20", "--classes", "30"]
    text = table.main(argv)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    cards = [registry.info(n) for n in sorted(registry.list_models())]
    omniglot = [c.name for c in cards if c.splits.get("test") == "omniglot/evaluation" and c.input_shape == (28, 28, 1)]
    expected = ["raw pixels (floor)", "conv4, random weights"] + [f"`{n}`" for n in omniglot]
    assert [r.split(" | ")[0][2:] for r in rows] == expected
    # The floor's features by hand: unit vectors of the ink-bright pixels.
    import zoo.data

    data = zoo.data.load("omniglot", "evaluation")
    pixels = table.raw_pixels(data["images"][:2])
    x = 255.0 - data["images"][:2].reshape(2, -1).astype(np.float64)
    np.testing.assert_allclose(pixels, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-5)
    table.main(argv)  # rewriting replaces the section and keeps the other one
    written = readme.read_text()
    assert written.count("<!-- ssl:start -->") == 1 and "<!-- other:start -->\nkept\n<!-- other:end -->" in written


@pytest.mark.slow
def test_clip_shift_table_measures_the_clean_split_as_the_card_and_shifts_it(tmp_path, monkeypatch):
    shift = load_recipe("clip_shift", monkeypatch)
    root = tmp_path / "zoo"
    root.mkdir()
    (root / "clip").symlink_to(registry.exports_dir() / "clip")
    monkeypatch.setattr(shift, "SHIFTS", {k: shift.SHIFTS[k] for k in ("clean", "inverted colours")})
    readme, out = tmp_path / "README.md", tmp_path / "shift.json"
    readme.write_text("# Recipes\n\n<!-- shift:start -->\nold\n<!-- shift:end -->\nkept\n")
    text, results = shift.main(["--root", str(root), "--readme", str(readme), "--json", str(out)])
    card = registry.info("clip")
    for metric in shift.METRICS:  # ONNX graphs against the card's Keras numbers: a rank may flip, no more
        assert abs(results["clip"]["clean"][metric] - card.metrics[metric]) <= 2 / 382
    assert results["clip"]["inverted colours"]["zero_shot_category_top1"] < card.metrics["zero_shot_category_top1"]
    assert readme.read_text().endswith("<!-- shift:end -->\nkept\n") and "old" not in readme.read_text()
    assert "| inverted colours | no | " in text and json.loads(out.read_text())["results"] == results
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(shift.inverted(images), 255 - images)
    from PIL import Image

    luma = np.asarray([np.asarray(Image.fromarray(x).convert("L")) for x in images])
    assert np.array_equal(shift.grey(images), np.repeat(luma[..., None], 3, axis=-1))


def test_a_config_field_added_after_a_run_matches_only_at_its_default():
    @dataclasses.dataclass
    class Config:
        epochs: int = 2
        styles: bool = False  # added after the run below

    recorded = {"epochs": 3}
    assert zoo.training.same_config(recorded, Config(epochs=3))
    assert not zoo.training.same_config(recorded, Config(epochs=3, styles=True))
    assert not zoo.training.same_config(recorded, Config(epochs=2))
    assert not zoo.training.same_config({"epochs": 3, "gone": 1}, Config(epochs=3))
