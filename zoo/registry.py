"""Registry of published embedders: `Card` <-> `<entry>/card.json`; list, inspect, load.

Entries are found in the local root (`root=`, else $ZOO_EXPORTS, else the checkout's `exports/`), then in the
installed entry packages, then in the cache of pulled entries; a hub URL names an entry too (pulled into the
cache). The search order lives in `zoo.runtime.entries`, shared with the runtime.

Importing this module imports neither Keras nor TensorFlow; `load` imports Keras when called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

from zoo.runtime import entries

__all__ = ["Card", "EXPORTS_DIR", "exports_dir", "list_models", "info", "load", "locate", "entry_folder",
           "verify_files", "file_sha256", "folder_sha256"]

# Default local root of the zoo: `exports/` next to the `zoo` package; `ZOO_EXPORTS` or `root=` take its place.
EXPORTS_DIR = entries.EXPORTS_DIR

TOWER_INPUTS = {"images": "float32", "token_ids": "int32"}
_TOWER_KEYS = ("input", "shape", "dtype", "onnx", "keras", "saved_model")
_INT8_KEYS = ("fp32", "int8", "kept", "calibration_images")
# What the card of a converted entry says of its weights' origin.
SOURCE_KEYS = ("package", "version", "file", "sha256", "licence", "reported")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Card:
    """Metadata of one published embedder, as stored in `exports/<name>/card.json`.

    Args:
        name: str. folder name of the entry, e.g. "facenet_triplet".
        method: str. class name of the training method, e.g. "Triplet".
        dataset: str. training dataset.
        splits: dict. split names, e.g. {"train": "lfw/train", "test": "lfw/test"}.
        input_shape: tuple[int, int, int]. (H, W, C) of the image input.
        embedding_dim: int. D of the (B, D) embeddings.
        metric: str. "cosine" (embeddings are L2-normalised).
        threshold: float | None. same identity when the Euclidean distance of the embeddings is <= threshold.
        metrics: dict. held-out metrics computed by the recipe's evaluation.
        primary_metric: str. key of `metrics` that ranks the entry (higher is better).
        protocol: str. a protocol of `zoo.protocols` (`zoo.protocols.names()`): which held-out evaluation the
            card's metrics come from and `zoo report` runs. Older cards' "self_supervised" reads as "few_shot" with
            `trained_with_labels` False.
        trained_with_labels: bool | None. whether training read class labels (None: not recorded).
        anchor: str. literature reference value to compare with.
        recipe: str. command that reproduces the entry.
        paper: str. reference of the method.
        data_license: str. license of the training data.
        created: str. ISO-8601 UTC time of publication.
        training: dict. how it was trained (steps, epochs, minutes, backend, seed, ...).
        towers: dict. role -> {"input", "shape", "dtype", and its file in each format: "keras", "saved_model", "onnx",
            "tflite" (since LiteRT)}; the first is the image tower.
        int8: dict | None. the int8 gate, or None if not tried: {"fp32", "int8" (the gate metric of each graph),
            "kept", "calibration_images", ...}; cards since the int8 gate also record "file", "metric",
            "golden_min_cosine", "scheme", "cpu" and "validated_on" (the CPU classes of `zoo.runtime.int8_cpu_class`
            the gate passed on). See `zoo.export.int8_gate`.
        extras: dict. method-specific settings, e.g. tokenizer settings.
        preprocessing: dict | None. the preprocessing contract: how a decoded image file becomes the image
            input (colour, alpha background, ink, face alignment or crop, fit, resize); see `zoo.runtime.contract`.
            None on cards published before the contract.
        source: dict | None. for an entry converted from weights a registry package ships (`zoo.convert`): {"package",
            "version", "file", "sha256", "licence", "reported"} (where the weights come from and what their authors
            report); None for entries trained here.
        files: dict. relative path -> sha256 of every other file in the folder.
    """

    name: str
    method: str
    dataset: str
    splits: dict
    input_shape: tuple
    embedding_dim: int
    metric: str = "cosine"
    threshold: float | None = None
    metrics: dict
    primary_metric: str
    protocol: str
    trained_with_labels: bool | None = None
    anchor: str = ""
    recipe: str
    paper: str
    data_license: str
    created: str
    training: dict = dataclasses.field(default_factory=dict)
    towers: dict
    int8: dict | None = None
    extras: dict = dataclasses.field(default_factory=dict)
    preprocessing: dict | None = None
    source: dict | None = None
    files: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        where = f"card {self.name!r}"
        for key in ("name", "method", "dataset", "metric", "primary_metric", "protocol", "anchor", "recipe",
                    "paper", "data_license", "created"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"{where}: {key} must be a str, got {getattr(self, key)!r}")
        for key in ("splits", "metrics", "training", "towers", "extras", "files"):
            if not isinstance(getattr(self, key), dict):
                raise ValueError(f"{where}: {key} must be a dict, got {getattr(self, key)!r}")
        shape = self.input_shape
        if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(_positive_int(s) for s in shape)):
            raise ValueError(f"{where}: input_shape must be [H, W, C] of positive ints, got {shape!r}")
        object.__setattr__(self, "input_shape", tuple(int(s) for s in shape))
        if not _positive_int(self.embedding_dim):
            raise ValueError(f"{where}: embedding_dim must be a positive int, got {self.embedding_dim!r}")
        if self.metric != "cosine":
            raise ValueError(f"{where}: metric must be 'cosine', got {self.metric!r}")
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
                raise ValueError(f"{where}: threshold must be a float or None, got {self.threshold!r}")
            object.__setattr__(self, "threshold", float(self.threshold))
        from zoo import protocols

        protocol, labels = protocols.canonical(self.protocol)
        object.__setattr__(self, "protocol", protocol)
        if self.trained_with_labels is None:
            object.__setattr__(self, "trained_with_labels", labels)
        if self.protocol not in protocols.names():
            raise ValueError(f"{where}: protocol must be one of {list(protocols.names())}, got {self.protocol!r}")
        if self.trained_with_labels is not None and not isinstance(self.trained_with_labels, bool):
            raise ValueError(f"{where}: trained_with_labels must be true, false or null, got "
                             f"{self.trained_with_labels!r}")
        if self.primary_metric not in self.metrics:
            raise ValueError(f"{where}: primary_metric {self.primary_metric!r} is not a key of metrics "
                             f"{sorted(self.metrics)}")
        try:
            datetime.fromisoformat(self.created)
        except ValueError:
            raise ValueError(f"{where}: created must be an ISO-8601 time, got {self.created!r}") from None
        if self.preprocessing is not None:
            _check_preprocessing(where, self.preprocessing, self.input_shape)
        if self.source is not None:
            missing = [k for k in SOURCE_KEYS if k not in self.source] if isinstance(self.source, dict) else SOURCE_KEYS
            if missing:
                raise ValueError(f"{where}: source must be None or a dict with keys {list(SOURCE_KEYS)}; lacks {missing}")
        if not self.towers:
            raise ValueError(f"{where}: towers must list at least one tower")
        for role, tower in self.towers.items():
            missing = [k for k in _TOWER_KEYS if k not in tower] if isinstance(tower, dict) else list(_TOWER_KEYS)
            if missing:
                raise ValueError(f"{where}: tower {role!r} lacks {missing}; expected keys {list(_TOWER_KEYS)}")
            if TOWER_INPUTS.get(tower["input"]) != tower["dtype"]:
                raise ValueError(f"{where}: tower {role!r} has input {tower['input']!r} of dtype {tower['dtype']!r}; "
                                 f"expected one of {TOWER_INPUTS}")
        if self.int8 is not None and not (isinstance(self.int8, dict) and all(k in self.int8 for k in _INT8_KEYS)):
            raise ValueError(f"{where}: int8 must be None or a dict with keys {list(_INT8_KEYS)}, got {self.int8!r}")

    @classmethod
    def from_json(cls, source) -> Card:
        """Build a card from a card.json path, an export folder, or an already parsed dict.

        Args:
            source: str | Path | dict. path of card.json or of its folder, or the card as a dict.
        """
        if isinstance(source, dict):
            data = source
        else:
            path = Path(source)
            if path.is_dir():
                path = path / "card.json"
            if not path.is_file():
                raise FileNotFoundError(f"no card.json at {path}")
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from err
            if not isinstance(data, dict):
                raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"card has unknown fields {unknown}; expected fields {list(fields)}")
        missing = [name for name, f in fields.items() if name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"card {data.get('name', '?')!r} lacks required fields {missing}")
        return cls(**data)

    def to_dict(self) -> dict:
        """The card as a JSON-ready dict (input_shape as a list), in field order; `source` only where there is one
        (the cards of entries trained here stay as they were written)."""
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        if data["source"] is None:
            del data["source"]
        return data

    def to_json(self) -> str:
        """The card as the JSON text of card.json."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


def _check_preprocessing(where, contract, input_shape) -> None:
    """The contract must describe this entry's input: its colour mode and its resize target."""
    h, w, c = input_shape
    color = contract.get("color") if isinstance(contract, dict) else None
    if color != {1: "grey", 3: "rgb"}.get(c):
        raise ValueError(f"{where}: preprocessing.color must be {'grey' if c == 1 else 'rgb'} for input_shape "
                         f"{list(input_shape)}, got {color!r}")
    size = (contract.get("resize") or {}).get("size")
    if list(size or []) != [h, w]:
        raise ValueError(f"{where}: preprocessing.resize.size must be [{h}, {w}] (the input shape), got {size!r}")
    if contract.get("fit", "stretch") not in ("pad", "center_crop", "stretch"):
        raise ValueError(f"{where}: preprocessing.fit must be 'pad', 'center_crop' or 'stretch', "
                         f"got {contract.get('fit')!r}")
    face = contract.get("face")
    if face and (len(face.get("template", [])) != 5 or len(face.get("frame", [])) != 2):
        raise ValueError(f"{where}: preprocessing.face needs a 5-point template and a [h, w] frame, got {face!r}")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def exports_dir(root=None) -> Path:
    """Local root of the zoo, where `publish` writes: `root` if given, else $ZOO_EXPORTS, else EXPORTS_DIR.

    Args:
        root: str | Path | None. explicit root folder.
    """
    return Path(root or os.environ.get("ZOO_EXPORTS") or EXPORTS_DIR)


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in chunks.

    Args:
        path: str | Path. the file.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_sha256(folder) -> dict:
    """sha256 of every file under `folder` (recursively) except card.json, keyed by POSIX relative path.

    Args:
        folder: str | Path. an export folder.
    """
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): file_sha256(p)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() != "card.json"}


def verify_files(folder, card: Card) -> None:
    """Check that every file listed in `card.files` exists under `folder` with the recorded sha256.

    Args:
        folder: str | Path. the export folder.
        card: Card. its card.
    """
    folder = Path(folder)
    if not card.files:
        raise ValueError(f"card.json in {folder} lists no files to verify")
    for relpath, expected in card.files.items():
        path = folder / relpath
        if not path.is_file():
            raise FileNotFoundError(f"missing file of entry {card.name!r}: {path} (listed in card.json)")
        actual = file_sha256(path)
        if actual != expected:
            raise ValueError(f"sha256 mismatch for {path}: expected {expected} (card.json), got {actual}; "
                             "the file was modified or corrupted, re-publish the entry")


def list_models(root=None) -> list[str]:
    """Sorted names of the entries of every root: the local root, installed entry packages, the cache.

    Args:
        root: str | Path | None. local root (default: $ZOO_EXPORTS, else the checkout's exports/; see `exports_dir`).
    """
    return sorted(entries.found(root))


def locate(name: str, root=None) -> entries.Entry:
    """Where an entry is: the first root that has the name (`Entry.source` says which), or a URL pulled into the cache.

    Args:
        name: str. entry name, e.g. "facenet_triplet", or a hub URL ("hf://owner/repo@rev", "file:///...").
        root: str | Path | None. local root (default: see `exports_dir`).
    """
    return entries.locate(name, root)


def entry_folder(name: str, root=None) -> Path:
    """The folder of an entry (card.json and its files); see `locate`.

    Args:
        name: str. entry name or hub URL.
        root: str | Path | None. local root (default: see `exports_dir`).
    """
    return locate(name, root).folder


def info(name: str, root=None) -> Card:
    """The card of a published entry.

    Args:
        name: str. entry name, e.g. "facenet_triplet", or a hub URL.
        root: str | Path | None. local root (default: see `exports_dir`).
    """
    return Card.from_json(entry_folder(name, root) / "card.json")


def load(name: str, tower: str | None = None, root=None, verify: bool = True):
    """Load a published Keras embedder, after checking the sha256 of every file of the entry.

    Args:
        name: str. entry name, e.g. "facenet_triplet", or a hub URL ("hf://owner/repo@rev", "file:///...",
            "https://..."), pulled into the cache and checked file by file first.
        tower: str | None. tower role, e.g. "text_encoder" (default: the first tower, the image embedder).
        root: str | Path | None. local root (default: see `exports_dir`).
        verify: bool. check the sha256 digests recorded in card.json first.
    """
    folder = entry_folder(name, root)
    card = Card.from_json(folder / "card.json")
    role = next(iter(card.towers)) if tower is None else tower
    if role not in card.towers:
        raise KeyError(f"entry {name!r} has no tower {role!r}; towers: {list(card.towers)}")
    if verify:
        verify_files(folder, card)
    import keras

    import_custom_layers()
    return keras.saving.load_model(folder / card.towers[role]["keras"], compile=False, safe_mode=True)


def import_custom_layers() -> None:
    """Register the zoo's custom Keras layers (zoo.backbones), so `.keras` files load with safe_mode."""
    import zoo.backbones  # noqa: F401


def model_table(root=None) -> str:
    """The README's model table, in Markdown, generated from the published cards (never typed by hand)."""
    from zoo import protocols

    rows = ["| entry | method | trained on | held-out metric | value | literature anchor | training | int8 (gate metric change) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    # The entries published here (the local root), not those installed or pulled.
    local = entries.local_root(root)
    for entry in entries.folder_entries(*local) if local else []:
        name, card = entry.name, Card.from_json(entry.folder)
        value = protocols.headline(card)
        minutes = card.training.get("minutes")
        int8 = "-" if not card.int8 else (f"{'kept' if card.int8.get('kept') else 'dropped'} "
                                          f"({card.int8['int8'] - card.int8['fp32']:+.3f})")
        rows.append(f"| `{name}` | {card.method} | {card.dataset} | {card.primary_metric} | {value:.4f} | "
                    f"{card.anchor or '-'} | {f'{minutes} min' if minutes is not None else '-'} | {int8} |")
    return "\n".join(rows) + "\n"
