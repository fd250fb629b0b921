"""Publish trained embedders into the zoo, card first: card.json, .keras, then one exporter per format.

`publish(name, towers, card=..., metrics=...)` writes `.keras` files and runs every exporter module of this
package in ORDER (saved_model, onnx_graph, int8, litert); each writes its files into the entry and checks
its own parity. Then the card goes into the ONNX metadata, the golden outputs and every file's sha256 are
written, and the folder is swapped in atomically: a failed publish leaves the previous entry intact.
The exporters need TensorFlow; from another Keras backend they run in a `python -m zoo.export --finish`
subprocess under KERAS_BACKEND=tensorflow, on the `.keras` files the caller saved (so a recipe publishes in
one step from JAX or torch).

An exporter is a module here with `ORDER` (int), `KEY` (the tower spec's key of its files, or None),
`filename(role, first)` (when KEY is set) and `export(folder, card, towers, golden, context) -> Card`;
adding a format is adding one such module. `python -m zoo.export --reexport NAME` runs the exporters again
on a published entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from zoo.export.int8 import (INT8_MAX_DROP, INT8_MIN_COSINE, INT8_SCHEME_ORDER, INT8_SCHEMES, int8_gate,
                             quantize)
from zoo.export.onnx_graph import full_rank_broadcasts, inferred_shapes
from zoo.registry import TOWER_INPUTS, Card, exports_dir, folder_sha256, import_custom_layers, verify_files
from zoo.runtime.writes import write_folder

__all__ = ["publish", "reexport", "exporters", "quantize", "int8_gate", "full_rank_broadcasts", "inferred_shapes",
           "INT8_SCHEMES", "INT8_SCHEME_ORDER", "INT8_MAX_DROP", "INT8_MIN_COSINE", "CARD_FIELDS"]

# The card's static fields a recipe passes as data (`card=`); see `zoo.registry.Card`.
CARD_FIELDS = ("method", "dataset", "splits", "protocol", "primary_metric", "recipe", "paper", "data_license",
               "anchor", "extras", "preprocessing", "trained_with_labels", "source")
_REQUIRED = CARD_FIELDS[:8]
# Caller's backend (e.g. JAX) vs the same .keras on TensorFlow: different kernels, so float32 round-off differs.
CROSS_BACKEND_ATOL = 1e-4
GOLDEN_COUNT = 8
_JOB = "_job"  # inputs of the finishing step inside the temporary folder; removed before hashing
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ROLE = re.compile(r"[A-Za-z0-9_]+")


def exporters() -> list:
    """The exporter modules of this package, in their ORDER."""
    modules = [importlib.import_module(f"{__name__}.{m.name}") for m in pkgutil.iter_modules(__path__)
               if not m.name.startswith("_")]
    return sorted((m for m in modules if hasattr(m, "ORDER") and hasattr(m, "export")), key=lambda m: m.ORDER)


def publish(name, towers, *, card, metrics, training=None, threshold=None, golden_inputs=None, int8=True,
            calibration_images=None, extra_files=None, root=None) -> Card:
    """Publish embedders as `<root>/<name>/`, atomically; returns the card written.

    Args:
        name: str. entry name and folder name, e.g. "facenet_triplet".
        towers: keras.Model | dict. the embedder, or role -> embedder (the first an image tower), e.g.
            {"image_encoder": m1, "text_encoder": m2}. Each has one input named "images" (float32 (B, H, W, C),
            pixels 0..255) or "token_ids" (int32 (B, L)) and one L2-normalised (B, D) output.
        card: dict. the card's static fields (CARD_FIELDS, documented on `zoo.registry.Card`): method, dataset,
            splits, protocol, primary_metric, recipe, paper, data_license, and optionally anchor and extras.
        metrics: dict. held-out metrics computed by the recipe through `zoo.protocols`.
        training: dict | None. how it was trained (`zoo.recipe.TrainingRun.record`).
        threshold: float | None. verification threshold on the Euclidean distance of the embeddings.
        golden_inputs: array | dict | None. fixed inputs of the first tower, or role -> inputs; image towers
            default to 8 seeded random images; token_ids towers need them given.
        int8: bool. quantise the first tower and keep `<role>.int8.onnx` if it passes the int8 gate on this
            CPU (see `zoo.export.int8`).
        calibration_images: array | None. (N, H, W, C) images to calibrate int8 on (<= 256 are used); default:
            a seeded sample of the card's training split (`zoo.protocols.train_images`).
        extra_files: list | None. paths of files copied into the entry under their own names, e.g. vocab.json.
        root: str | Path | None. zoo root (default: see `zoo.registry.exports_dir`).
    """
    import keras

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"name must be a folder name of letters, digits, '_', '-', '.', got {name!r}")
    fields = dict(card)
    unknown, missing = sorted(set(fields) - set(CARD_FIELDS)), [k for k in _REQUIRED if k not in fields]
    if unknown or missing:
        raise ValueError(f"card= takes the fields {list(CARD_FIELDS)} (required: {list(_REQUIRED)}); "
                         f"unknown {unknown}, missing {missing}")
    towers = {"embedder": towers} if isinstance(towers, keras.Model) else dict(towers)
    if not towers:
        raise ValueError("towers must be a keras.Model or a non-empty dict role -> keras.Model")
    specs = {role: _tower_spec(role, model, first=i == 0) for i, (role, model) in enumerate(towers.items())}
    first = next(iter(specs))
    if specs[first]["input"] != "images":
        raise ValueError(f"the first tower ({first!r}) must take 'images'; got {specs[first]['input']!r}")
    if int8:
        from zoo import protocols

        if protocols.get(fields["protocol"]).gate is not None:
            protocols.check_gate_splits(fields["splits"], ("train", "test") if calibration_images is None else ("test",))
    if calibration_images is not None:
        calibration_images = _calibration_sample(calibration_images, specs[first]["shape"])
    golden = _golden_inputs(golden_inputs, specs)
    embeddings = {role: _keras_embed(model, golden[role]) for role, model in towers.items()}  # role -> (8, D)
    for role, emb in embeddings.items():
        norms = np.linalg.norm(emb, axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            raise ValueError(f"tower {role!r} must output L2-normalised embeddings; got norms {norms.round(4)}")
    card = Card(name=name, **{k: _plain(v) for k, v in fields.items()}, input_shape=specs[first]["shape"],
                embedding_dim=int(embeddings[first].shape[1]), threshold=threshold, metrics=_plain(metrics),
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"), training=_plain(training or {}),
                towers=specs)
    on_tensorflow = keras.backend.backend() == "tensorflow"


    def fill(tmp):
        for role, model in towers.items():
            model.save(tmp / specs[role]["keras"])
        _copy_extra_files(extra_files, tmp, card)
        if on_tensorflow:
            return _finish(tmp, card, towers, golden, int8, calibration_images)
        written = _finish_in_subprocess(tmp, card, golden, int8, calibration_images)
        with np.load(tmp / "golden.npz") as saved:
            for role, emb in embeddings.items():
                diff = float(np.abs(saved[f"{role}__embeddings"] - emb).max())
                if diff > CROSS_BACKEND_ATOL:
                    raise RuntimeError(f"tower {role!r}: the .keras file on TensorFlow differs from the "
                                       f"{keras.backend.backend()} model by {diff:.2e} > {CROSS_BACKEND_ATOL}")
        return written

    return _write_entry(root, name, fill)


def reexport(name, root=None) -> Card:
    """Run every exporter again on a published entry's own `.keras` towers; returns the new card.

    The weights, golden inputs, metrics and the card's other fields stay; every format's files, the int8
    gate (measured on this CPU), the golden outputs and every sha256 are recomputed, and the entry is swapped
    in atomically. This is how an entry picks up a change of an exporter (a new int8 scheme, a graph pass)
    without retraining: `python -m zoo.export --reexport NAME`. Needs TensorFlow. (To recompute the metrics
    too, run the entry's recipe with `--trained exports/NAME`.)

    Args:
        name: str. a published entry.
        root: str | Path | None. zoo root (default: see `zoo.registry.exports_dir`).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"reexport runs the exporters under TensorFlow: set KERAS_BACKEND=tensorflow, "
                           f"got {keras.backend.backend()!r}")
    root = exports_dir(root)
    folder = root / name
    card = Card.from_json(folder)
    verify_files(folder, card)
    import_custom_layers()
    towers = {role: keras.saving.load_model(folder / t["keras"], compile=False, safe_mode=True)
              for role, t in card.towers.items()}
    with np.load(folder / "golden.npz") as saved:
        golden = {role: saved[f"{role}__inputs"] for role in card.towers}
    extra_files = [folder / p for p in card.files if "/" not in p and p not in _output_names(card)]
    specs = {role: _tower_spec(role, model, first=i == 0) for i, (role, model) in enumerate(towers.items())}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    first_published = card.extras.get("reexported", {}).get("first_published", card.created)
    card = dataclasses.replace(card, created=now, int8=None, files={}, towers=specs, extras={
        **card.extras, "reexported": {"command": f"python -m zoo.export --reexport {name}",
                                      "first_published": first_published}})

    def fill(tmp):
        for role, t in card.towers.items():
            shutil.copy2(folder / t["keras"], tmp / t["keras"])
        _copy_extra_files(extra_files, tmp, card)
        return _finish(tmp, card, towers, golden, True, None)

    return _write_entry(root, name, fill)


def _write_entry(root, name, fill) -> Card:
    """Write `<root>/<name>/` atomically: `fill(tmp)` writes every file into a hidden temporary folder beside
    it and returns the card; the folder is then swapped in (`zoo.runtime.writes.write_folder`). On any failure
    the old entry stays as it was; a folder there that is not a zoo entry (no card.json, or files its card does
    not list) is refused, before the work."""
    root = exports_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    return write_folder(root / name, fill, _entry_files, what=f"the zoo entry {name!r}")


def _entry_files(folder: Path) -> list:
    """The files of the zoo entry in `folder`, as its card.json lists them; FileExistsError if it has none."""
    try:
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        card = None
    if not isinstance(card, dict) or not isinstance(card.get("files"), dict):
        raise FileExistsError(f"{folder}: not a zoo entry (no card.json listing its files); refusing to publish "
                              "over it (move it away, or choose another name)")
    return ["card.json", *card["files"]]


def _tower_spec(role, model, first) -> dict:
    """The card's description of one tower and its file in each format, after checking the export contract."""
    import keras

    if not isinstance(role, str) or not _ROLE.fullmatch(role):
        raise ValueError(f"tower role must be letters, digits and '_' (it names files), got {role!r}")
    if not isinstance(model, keras.Model) or len(model.inputs or []) != 1 or len(model.outputs or []) != 1:
        raise ValueError(f"tower {role!r} must be a functional keras.Model with one input and one output")
    spec, out = model.inputs[0], model.outputs[0]
    shape = tuple(spec.shape[1:])
    rank = {"images": 3, "token_ids": 1}.get(spec.name)
    if TOWER_INPUTS.get(spec.name) != spec.dtype or len(shape) != rank or None in shape:
        raise ValueError(f"tower {role!r}: expected an input named 'images' (float32 (None, H, W, C)) or "
                         f"'token_ids' (int32 (None, L)); got {spec.name!r} {spec.dtype} {tuple(spec.shape)}")
    if len(out.shape) != 2 or out.shape[1] is None:
        raise ValueError(f"tower {role!r}: expected an output of shape (None, D), got {tuple(out.shape)}")
    files = {e.KEY: e.filename(role, first) for e in exporters() if e.KEY}
    return {"input": spec.name, "shape": [int(s) for s in shape], "dtype": spec.dtype, "keras": f"{role}.keras",
            **files}


def _golden_inputs(given, specs) -> dict:
    """role -> fixed inputs: the given ones, or 8 seeded random images."""
    first = next(iter(specs))
    given = {} if given is None else dict(given) if isinstance(given, dict) else {first: given}
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ValueError(f"golden_inputs for unknown towers {unknown}; towers: {list(specs)}")
    rng = np.random.default_rng(0)
    golden = {}
    for role, spec in specs.items():
        if role in given:
            x = np.asarray(given[role])
            if x.ndim != len(spec["shape"]) + 1 or list(x.shape[1:]) != spec["shape"] or len(x) == 0:
                raise ValueError(f"golden_inputs[{role!r}] must have shape (N, {', '.join(map(str, spec['shape']))}),"
                                 f" N >= 1; got {x.shape}")
            golden[role] = x.astype(spec["dtype"])
        elif spec["input"] == "images":
            golden[role] = rng.integers(0, 256, (GOLDEN_COUNT, *spec["shape"])).astype(np.float32)
        else:
            raise ValueError(f"golden_inputs[{role!r}] is required: token_ids towers need valid ids "
                             "(e.g. tokenised prompts), whose range only the recipe knows")
    return golden


def _calibration_sample(images, shape) -> np.ndarray:
    """Up to 256 of the given calibration images (`zoo.protocols.seeded_sample`), as float32."""
    from zoo.protocols import seeded_sample

    images = np.asarray(images)
    if images.ndim != 4 or list(images.shape[1:]) != shape or len(images) == 0:
        raise ValueError(f"calibration_images must have shape (N, {', '.join(map(str, shape))}), N >= 1; "
                         f"got {images.shape}")
    return seeded_sample(images)


def _keras_embed(model, inputs) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(model(inputs, training=False)), dtype=np.float32)


def _plain(value):
    """`value` as plain JSON data (numpy scalars and arrays become numbers and lists)."""
    def default(obj):
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        raise TypeError(f"card fields must be JSON data; got {type(obj).__name__}: {obj!r}")

    try:
        return json.loads(json.dumps(value, default=default))
    except TypeError as err:
        raise ValueError(str(err)) from None


def _output_names(card) -> set:
    """The top-level files and folders the exporters write for `card`."""
    names = {"card.json", "golden.npz", _JOB}
    for role, tower in card.towers.items():
        names |= {v for k, v in tower.items() if k not in ("input", "shape", "dtype")} | {f"{role}.int8.onnx"}
    return names


def _copy_extra_files(paths, tmp, card) -> None:
    reserved = _output_names(card)
    for path in paths or ():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"extra file not found: {path}")
        if path.name in reserved or (tmp / path.name).exists():
            raise ValueError(f"extra file name {path.name!r} clashes with another file of the entry")
        shutil.copy2(path, tmp / path.name)


def _finish_in_subprocess(tmp, card, golden, int8, calibration_images) -> Card:
    """Run `_finish` under TensorFlow in `python -m zoo.export --finish tmp`; returns the card it wrote."""
    job = tmp / _JOB
    job.mkdir()
    (job / "job.json").write_text(json.dumps({"card": card.to_dict(), "int8": bool(int8)}))
    np.savez(job / "golden.npz", **golden)
    if calibration_images is not None:
        np.save(job / "calibration.npy", calibration_images)
    # The child must import what the caller can: the zoo itself.
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               PYTHONPATH=os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path))
    done = subprocess.run([sys.executable, "-m", "zoo.export", "--finish", str(tmp)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the TensorFlow export step failed (exit {done.returncode}):\n{done.stderr[-6000:]}")
    return Card.from_json(tmp / "card.json")


def _finish_job(tmp: Path) -> Card:
    """The subprocess side: load the saved .keras towers under TensorFlow and run `_finish`."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"--finish needs KERAS_BACKEND=tensorflow, got {keras.backend.backend()!r}")
    job = tmp / _JOB
    spec = json.loads((job / "job.json").read_text())
    card = Card.from_json(spec["card"])
    import_custom_layers()
    towers = {role: keras.saving.load_model(tmp / t["keras"], compile=False, safe_mode=True)
              for role, t in card.towers.items()}
    with np.load(job / "golden.npz") as f:
        golden = {role: f[role] for role in card.towers}
    calibration = np.load(job / "calibration.npy") if (job / "calibration.npy").exists() else None
    return _finish(tmp, card, towers, golden, spec["int8"], calibration)


def _finish(tmp, card, towers, golden, int8, calibration_images) -> Card:
    """Under TensorFlow: every exporter in ORDER, the card into the ONNX files, golden.npz, hashes, card.json."""
    from zoo.export import onnx_graph

    keras_out = {role: _keras_embed(model, golden[role]) for role, model in towers.items()}
    context = {"int8": int8, "calibration_images": calibration_images, "keras": keras_out}
    for exporter in exporters():
        card = exporter.export(tmp, card, towers, golden, context)
    onnx_graph.write_card(tmp, card)
    np.savez(tmp / "golden.npz", **{f"{role}__{kind}": value for role in towers
                                    for kind, value in (("inputs", golden[role]), ("embeddings", keras_out[role]))})
    shutil.rmtree(tmp / _JOB, ignore_errors=True)
    card = dataclasses.replace(card, files=folder_sha256(tmp))
    (tmp / "card.json").write_text(card.to_json(), encoding="utf-8")
    return card


def main(argv=None) -> None:
    """`python -m zoo.export --reexport NAME`: run the exporters again on a published entry (see `reexport`).
    `--finish DIR` is the TensorFlow half of a publish started on another backend (internal)."""
    parser = argparse.ArgumentParser(prog="python -m zoo.export", description=main.__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--reexport", nargs="+", metavar="NAME", help="published entries to export again")
    group.add_argument("--finish", metavar="DIR", help="temporary folder prepared by publish()")
    parser.add_argument("--root", default=None, help="zoo root (default: exports/ or $ZOO_EXPORTS)")
    args = parser.parse_args(argv)
    if args.finish:
        _finish_job(Path(args.finish))
        return
    for name in args.reexport:
        card = reexport(name, args.root)
        print(f"{name}: re-exported; {describe_int8(card.int8)}", flush=True)


def describe_int8(record) -> str:
    """One line on an int8 record: kept or dropped, the gate's numbers, the scheme and the CPU class."""
    if not record:
        return "no int8 tried"
    return (f"int8 {'kept' if record['kept'] else 'dropped'} ({record.get('metric')} fp32 {record['fp32']:.4f}, "
            f"int8 {record['int8']:.4f}, golden cosine >= {record.get('golden_min_cosine', float('nan')):.4f}, "
            f"scheme {record.get('scheme') or ', '.join(t['scheme'] for t in record.get('tried', []))} "
            f"on {(record.get('cpu') or {}).get('machine')}:{'+'.join((record.get('cpu') or {}).get('flags', []))})")
