"""The protocol registry: what every held-out protocol owns, and the loaders of held-out splits.

A `Protocol` owns running itself on embeddings (`run`), the card's headline and int8 gate metrics, the quick
options of a smoke run or `zoo report --quick`, its data for the report's figures, and what it means on a
user's folder (`on_folder`). A card names its protocol (`card.protocol`); `for_card(card)` finds it, and
nothing outside this package branches on a protocol's name.
"""

from __future__ import annotations

import numpy as np

CALIBRATION_COUNT = 256
_REGISTRY: dict = {}
# Names that older cards carry: their entries were trained without labels and evaluated as few-shot
# (whether an entry saw labels is the card's `trained_with_labels`, not a protocol).
ALIASES = {"self_supervised": "few_shot"}


class Protocol:
    """A held-out protocol. Subclasses set the class attributes and implement `run`.

    Attributes:
        name: str. what cards call it.
        gate: str | None. the metric the int8 gate compares (higher is better); None: no int8 gate.
        needs_text: bool. whether it embeds text too (an entry's text tower).
        figure: str | None. the report's figure its entries share ("roc", "few_shot") or None.
        quick: dict. options of a quick run (fewer episodes, pairs, classes).
    """

    name = ""
    gate = None
    needs_text = False
    figure = None
    quick: dict = {}

    def run(self, embed_fn, data, *, embed_text=None, **options) -> dict:
        """The metrics of `embed_fn` ((N, H, W, C) float32 -> (N, D)) on a held-out split `data`."""
        raise NotImplementedError

    def held_out(self, card, embed_fn, embed_text=None, *, data=None, quick=False, **options) -> dict:
        """The protocol on the card's held-out split (`card.splits["test"]`), quick or in full."""
        data = test_data(card) if data is None else data
        if quick:
            data, fewer = self.shrink(data)
            options = {**fewer, **options}
        return self.run(embed_fn, data, embed_text=embed_text, **options)

    def shrink(self, data) -> tuple[dict, dict]:
        """(data, options) of a quick run: by default the same data with `quick`'s options."""
        return data, dict(self.quick)

    def gate_value(self, card, embed_fn, data=None, embed_text=None) -> float:
        """The int8 gate metric of one image embedder on the card's held-out split."""
        if self.gate is None:
            raise ValueError(f"{card.name}: the {self.name} protocol has no int8 gate")
        return float(self.held_out(card, embed_fn, embed_text, data=data)[self.gate])

    def on_folder(self, embed_fn, held_out, *, seed=0, embed_text=None) -> dict:
        """The protocol on the held-out part of a user's folder (`zoo.data.folders`)."""
        raise ValueError(f"the {self.name} protocol has no form for a user folder")

    def figure_data(self, x, data, options) -> dict:
        """What the report's figure needs beyond the embeddings `x` of `data` (e.g. a ROC curve)."""
        return {}

    @staticmethod
    def value(metric) -> float:
        """A metric as one number: a {mean, ci95} metric (few-shot episodes) by its mean."""
        return float(metric["mean"] if isinstance(metric, dict) else metric)


def register(cls):
    """Class decorator: one instance of `cls` serves every card that names `cls.name`."""
    _REGISTRY[cls.name] = cls()
    return cls


def names() -> tuple:
    """The registered protocols' names."""
    return tuple(sorted(_REGISTRY))


def get(name) -> Protocol:
    """The protocol registered under `name` (or an older card's alias of it)."""
    protocol = _REGISTRY.get(ALIASES.get(name, name))
    if protocol is None:
        raise ValueError(f"unknown protocol {name!r}; known: {list(names())}")
    return protocol


def canonical(name) -> tuple[str, bool | None]:
    """(the registered name, what an older card's name says of its labels): "self_supervised" is few_shot
    trained without labels; any other name is itself, saying nothing of them."""
    return (ALIASES[name], False) if name in ALIASES else (name, None)


def for_card(card) -> Protocol:
    return get(card.protocol)


def headline(card) -> float:
    """The card's primary metric as one number (a few-shot {mean, ci95} by its mean)."""
    return Protocol.value(card.metrics[card.primary_metric])


def held_out(card, embed_fn, embed_text=None, *, data=None, **options) -> dict:
    """The card's protocol on its held-out split, with the protocol's defaults unless `options` says otherwise.

    Args:
        card: Card. the entry's card.
        embed_fn: callable. (N, H, W, C) float32 images -> (N, D) embeddings.
        embed_text: callable | None. list[str] -> (N, D) text embeddings (protocols that `needs_text`).
        data: dict | None. the held-out split if already loaded.
        options: keyword arguments of the protocol's `run` (e.g. episodes=100), or quick=True.
    """
    return for_card(card).held_out(card, embed_fn, embed_text, data=data, **options)


def gate_metric(card, embed_fn, data=None, embed_text=None) -> float:
    """The entry's int8 gate metric (its protocol's `gate`) of one image embedder on its held-out split."""
    return for_card(card).gate_value(card, embed_fn, data, embed_text)


def _load(spec, shape, contract=None, count=None, seed=0) -> dict:
    """A bundled split named "dataset/split" at the entry's input shape, with what the split brings for the
    protocols (`zoo.data.held_out_extras`: Lake's runs, category descriptions).

    Where the bundled arrays are not of the entry's shape and the entry is a face entry (its contract has a
    `face`), the split's photos (LFW's rebuilt 250x250 frames, ORL's originals) go through the contract
    (`zoo.data.originals.prepared`): the entry sees its held-out faces as `zoo embed` would. With `count`, a
    seeded sample of that many rows (`seeded_sample`'s rows), prepared alone.
    """
    import zoo.data
    from zoo.data import originals

    if not (isinstance(spec, str) and spec.count("/") == 1):
        raise ValueError(f"expected a split named 'dataset/split', got {spec!r}")
    name, split = spec.split("/")
    h, w, c = shape
    data = zoo.data.load(name, split, size=h if zoo.data.sized(name) else None)
    rows = None if count is None else _sample_rows(len(data["images"]), count, seed)
    if data["images"].shape[1:] != (h, w, c):
        if not ((contract or {}).get("face") and name in originals.PHOTO_SETS):
            raise ValueError(f"images of {spec} are {data['images'].shape[1:]}; the embedder expects {(h, w, c)}")
        ready = originals.prepared(name, split, contract, shape, rows)
        data = {**data, "images": ready["images"], "labels": ready["labels"], "no_face": ready["no_face"]}
        return {**{k: v for k, v in data.items() if k in ("images", "labels", "no_face", "identity_names")},
                **zoo.data.held_out_extras(spec, size=h)}
    if rows is not None:
        data = {**data, "images": data["images"][rows], "labels": data["labels"][rows]}
    return {**data, **zoo.data.held_out_extras(spec, size=h)}


def check_gate_splits(splits, keys=("train", "test")) -> None:
    """Raise a ValueError unless `splits` names bundled "dataset/split"s to calibrate ("train") and gate
    ("test") int8 on."""
    import zoo.data

    for key in keys:
        spec = str((splits or {}).get(key, "")).split("+")[0].strip()
        name, _, split = spec.partition("/")
        if name not in zoo.data.names() or split not in zoo.data.splits(name):
            raise ValueError(f"int8 is calibrated on splits['train'] and gated on splits['test'], each a bundled "
                             f"'dataset/split' of zoo.data ({', '.join(zoo.data.names())}); got splits[{key!r}] = "
                             f"{(splits or {}).get(key)!r}. Pass int8=False to publish without int8")


def test_data(card) -> dict:
    """The entry's held-out split (`card.splits["test"]`) at its input shape (through its contract where the
    bundled arrays are of another size, see `_load`)."""
    return _load(card.splits.get("test"), card.input_shape, card.preprocessing)


def train_images(card, count=CALIBRATION_COUNT, seed=0) -> np.ndarray:
    """A seeded sample of `count` images of the entry's training split, float32 (N, H, W, C), e.g. to
    calibrate int8. With several training sets ("emoji/train + coco_mini/train"), the first one."""
    spec = str(card.splits.get("train", "")).split("+")[0].strip()
    return _load(spec, card.input_shape, card.preprocessing, count=count, seed=seed)["images"].astype(np.float32)


def _sample_rows(n, count=CALIBRATION_COUNT, seed=0) -> np.ndarray:
    """The rows `seeded_sample` keeps of `n` rows."""
    if n <= count:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def seeded_sample(images, count=CALIBRATION_COUNT, seed=0) -> np.ndarray:
    """Up to `count` rows of `images` drawn without replacement by `seed`, in their order, as float32."""
    images = np.asarray(images)
    return images[_sample_rows(len(images), count, seed)].astype(np.float32)


def embed_all(embed_fn, images) -> np.ndarray:
    """(N, D) float32 embeddings of (N, H, W, C) images by `embed_fn`."""
    return np.asarray(embed_fn(np.asarray(images, np.float32)), np.float32)


def classes_subset(data, n_classes, seed=0) -> dict:
    """`data` with all images of `n_classes` seeded-random classes only (quick runs); other keys kept."""
    classes = np.unique(data["labels"])
    if len(classes) <= n_classes:
        return data
    keep = np.isin(data["labels"], np.random.default_rng(seed).choice(classes, n_classes, replace=False))
    return {**data, "images": data["images"][keep], "labels": data["labels"][keep]}
