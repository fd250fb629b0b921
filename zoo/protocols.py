"""Held-out protocols: one function per protocol, each returning the card's metrics under one set of names.

An entry's card names its protocol (`card.protocol`) and its held-out split (`card.splits["test"]`,
"dataset/split"); `held_out(card, ...)` looks them up, nothing is inferred from an entry's name. Every
function takes an `embed_fn((N, H, W, C) float32 pixels 0..255) -> (N, D)`, so the same protocol runs on
Keras, SavedModel, ONNX fp32 and ONNX int8 alike: recipes, `zoo report`, the tables and the int8 gate
all call these.

Metric names (the only place they are defined):

| protocol | function | metrics |
| --- | --- | --- |
| verification | `verification` | `verification_accuracy` (10-fold, threshold chosen on the other folds), `verification_accuracy_std`, `auc`, `eer`, `tar@far=1e-3`, `threshold` (Euclidean distance, chosen on all pairs), `recall@1`, `recall@5`, `map_at_r`, `pairs`, `classes`, `images` |
| few_shot, self_supervised | `few_shot` | `{way}way{shot}shot` = {`mean`, `ci95`} for 5/20-way 1/5-shot, `lake_oneshot_runs` (Lake's 20 runs of 20-way one-shot), `recall@1`, `classes`, `episodes`, `queries` |
| zero_shot | `zero_shot` | `image_to_text_recall@k`, `text_to_image_recall@k`, `chance_recall@k` (k = 1, 5, 10), `zero_shot_category_top1` (categories by their names), `zero_shot_category_top1_with_subcategory_names` (each described by its subcategories' names too), `zero_shot_subcategory_top1`, `{category,subcategory}_{majority,chance}`, `linear_probe_category_top1`, `test_images` |

The int8 gate metric of each protocol (higher is better), `GATE_METRICS`:

| protocol | gate metric | held-out data |
| --- | --- | --- |
| verification | `verification_accuracy` | LFW test identities |
| few_shot, self_supervised | `5way1shot` (mean over 1,000 seeded episodes, 15 queries) | Omniglot evaluation alphabets |
| zero_shot | `image_to_text_recall@5` (each test image among all test captions, fp32 text tower) | emoji test split |
"""

from __future__ import annotations

import numpy as np

from zoo import evaluate

__all__ = ["GATE_METRICS", "FEW_SHOT_SETTINGS", "verification", "few_shot", "zero_shot", "held_out",
           "prompt_ensemble", "words", "test_data", "train_images", "seeded_sample", "check_gate_splits",
           "gate_metric"]

GATE_METRICS = {
    "verification": "verification_accuracy",
    "few_shot": "5way1shot",
    "self_supervised": "5way1shot",
    "zero_shot": "image_to_text_recall@5",
}
FEW_SHOT_SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))  # (way, shot), Vinyals et al. 2016 / Snell et al. 2017
FEW_SHOT_QUERIES = 15
FEW_SHOT_EPISODES = 1000
CALIBRATION_COUNT = 256


def _load(spec, shape) -> dict:
    """A bundled split named "dataset/split", at the entry's input shape (Omniglot comes in 28 and 105)."""
    import zoo.data

    if not (isinstance(spec, str) and spec.count("/") == 1):
        raise ValueError(f"expected a split named 'dataset/split', got {spec!r}")
    name, split = spec.split("/")
    h, w, c = shape
    data = zoo.data.load(name, split, size=h if name == "omniglot" else None)
    if data["images"].shape[1:] != (h, w, c):
        raise ValueError(f"images of {spec} are {data['images'].shape[1:]}; the embedder expects {(h, w, c)}")
    return data


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
    """The entry's held-out split (`card.splits["test"]`) at its input shape."""
    return _load(card.splits.get("test"), card.input_shape)


def train_images(card, count=CALIBRATION_COUNT, seed=0) -> np.ndarray:
    """A seeded sample of `count` images of the entry's training split, float32 (N, H, W, C), e.g. to
    calibrate int8. With several training sets ("emoji/train + coco_mini/train"), the first one."""
    spec = str(card.splits.get("train", "")).split("+")[0].strip()
    return seeded_sample(_load(spec, card.input_shape)["images"], count, seed)


def seeded_sample(images, count=CALIBRATION_COUNT, seed=0) -> np.ndarray:
    """Up to `count` rows of `images` drawn without replacement by `seed`, in their order, as float32."""
    images = np.asarray(images)
    if len(images) > count:
        images = images[np.sort(np.random.default_rng(seed).choice(len(images), count, replace=False))]
    return images.astype(np.float32)


def _embed(embed_fn, images) -> np.ndarray:
    return np.asarray(embed_fn(np.asarray(images, np.float32)), np.float32)  # (N, D)


def verification(embed_fn, data, *, pairs=None, seed=0) -> dict:
    """Face (or pair) verification on held-out classes: every same-label pair (or `pairs` of them) and as many
    different-label pairs; 10-fold accuracy with the threshold chosen on the other folds, ROC AUC, EER,
    TAR at FAR 1e-3, and leave-one-out retrieval (recall@1/5, MAP@R) over the same images.

    Reference: Huang et al. 2007, "Labeled Faces in the Wild" (the 10-fold unrestricted protocol).
    """
    x = _embed(embed_fn, data["images"])  # (N, D)
    labels = np.asarray(data["labels"])
    a, b, same = evaluate.verification_pairs(labels, n_pairs=pairs, seed=seed)
    v = evaluate.verification(x[a], x[b], same, folds=10)
    r = evaluate.retrieval(x, labels, ks=(1, 5))
    return {"verification_accuracy": v["accuracy"], "verification_accuracy_std": v["accuracy_std"], "auc": v["auc"],
            "eer": v["eer"], "tar@far=1e-3": v["tar_at_far"]["1e-03"], "threshold": v["threshold"],
            "recall@1": r["recall@1"], "recall@5": r["recall@5"], "map_at_r": r["map_at_r"], "pairs": int(len(same)),
            "classes": int(len(np.unique(labels))), "images": int(len(labels))}


def few_shot(embed_fn, data, *, runs=None, settings=FEW_SHOT_SETTINGS, queries=FEW_SHOT_QUERIES,
             episodes=FEW_SHOT_EPISODES, seed=0) -> dict:
    """Few-shot classification of held-out classes by the nearest prototype (the mean support embedding):
    each N-way K-shot setting over seeded episodes (mean and 95% CI), Lake's 20 one-shot runs when `runs`
    (`zoo.data.omniglot_oneshot_runs`) is given, and leave-one-out retrieval recall@1.

    Reference: Snell et al. 2017, "Prototypical Networks for Few-shot Learning"; Lake et al. 2015 (the runs).
    """
    x = _embed(embed_fn, data["images"])  # (N, D)
    labels = np.asarray(data["labels"])
    metrics = {}
    for way, shot in settings:
        fs = evaluate.few_shot(x, labels, way, shot, queries, episodes, seed=seed)
        metrics[f"{way}way{shot}shot"] = {"mean": fs["mean"], "ci95": fs["ci95"]}
    if runs is not None:
        shape = runs["train_images"].shape  # (R, W, H, W, C)
        train, test = (_embed(embed_fn, runs[k].reshape(-1, *shape[2:])).reshape(*shape[:2], -1)
                       for k in ("train_images", "test_images"))
        metrics["lake_oneshot_runs"] = evaluate.oneshot_runs(train, test, runs["answers"])["accuracy"]
    metrics["recall@1"] = evaluate.retrieval(x, labels, ks=(1,))["recall@1"]
    metrics.update(classes=int(len(np.unique(labels))), episodes=int(episodes), queries=int(queries))
    return metrics


def prompt_ensemble(embed_text, classes, templates) -> np.ndarray:
    """(C, D) class embeddings: each class's prompts (every template filled with each of its names) embedded,
    L2-normalised, averaged and re-normalised, as `zoo.runtime.OnnxCLIP.class_embeddings` does.

    Args:
        embed_text: callable. list[str] -> (N, D) text embeddings.
        classes: list of (str or list[str]). a class is a name or several names describing it.
        templates: sequence[str]. prompts with one `{}`.
    """
    classes = [[c] if isinstance(c, str) else list(c) for c in classes]
    prompts = [t.format(name) for names in classes for name in names for t in templates]
    e = np.asarray(embed_text(prompts), np.float32)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    ends = np.cumsum([len(names) * len(templates) for names in classes])
    means = np.stack([part.mean(axis=0) for part in np.split(e, ends[:-1])])  # (C, D)
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def words(name) -> str:
    """A class name as words: 'Smileys & Emotion' -> 'smileys and emotion', 'face-smiling' -> 'face smiling'."""
    return str(name).replace("&", "and").replace("-", " ").lower()


def image_text_retrieval(embed_fn, embed_text, data) -> dict:
    """Image->text and text->image recall@1/5/10 of held-out images with one caption each (row i of image i),
    among the split's captions, and chance rates: the retrieval half of `zero_shot`, for any captioned set."""
    x = _embed(embed_fn, data["images"])  # (N, D)
    captions = np.asarray(embed_text([str(c) for c in data["captions"]]), np.float32)  # (N, D), row i of image i
    metrics = {"test_images": int(len(x))}
    for direction, (q, g) in {"image_to_text": (x, captions), "text_to_image": (captions, x)}.items():
        for k, value in evaluate.paired_recall(q, g, ks=(1, 5, 10)).items():
            metrics[f"{direction}_{k}"] = value
    for k in (1, 5, 10):
        metrics[f"chance_recall@{k}"] = k / len(x)
    return metrics


def zero_shot(embed_fn, embed_text, data, *, templates, train=None) -> dict:
    """Image-text retrieval and zero-shot classification on held-out images with captions (emoji test split):
    image->text and text->image recall@1/5/10 among the split's captions; zero-shot top-1 by prompt ensembles
    over the category names, over the categories described by their subcategory names, and over the
    subcategories; chance and majority rates; a linear probe on the categories when `train` is given.

    Reference: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision".
    """
    import zoo.data

    x = _embed(embed_fn, data["images"])  # (N, D)
    n = len(x)
    metrics = image_text_retrieval(lambda _: x, embed_text, data)
    described = [[words(n) for n in names] for names in zoo.data.emoji_category_descriptions()]
    classes = {"zero_shot_category_top1": (data["labels"], [words(c) for c in data["category_names"]]),
               "zero_shot_category_top1_with_subcategory_names": (data["labels"], described),
               "zero_shot_subcategory_top1": (data["subcategory_labels"],
                                              [words(c) for c in data["subcategory_names"]])}
    for key, (labels, names) in classes.items():
        text = prompt_ensemble(embed_text, names, templates)  # (C, D)
        metrics[key] = evaluate.zero_shot(x, labels, text)["accuracy"]
    for key, labels, names in (("category", data["labels"], data["category_names"]),
                               ("subcategory", data["subcategory_labels"], data["subcategory_names"])):
        metrics[f"{key}_majority"] = float(np.bincount(labels).max() / n)
        metrics[f"{key}_chance"] = 1.0 / len(names)
    if train is not None:
        metrics["linear_probe_category_top1"] = evaluate.linear_probe(
            _embed(embed_fn, train["images"]), train["labels"], x, data["labels"])["accuracy"]
    return metrics


def held_out(card, embed_fn, embed_text=None, *, data=None, **options) -> dict:
    """The card's protocol on its held-out split (`card.protocol`, `card.splits["test"]`), with the protocol's
    defaults unless `options` says otherwise; the metrics under this module's names.

    Args:
        card: Card. the entry's card.
        embed_fn: callable. (N, H, W, C) float32 images -> (N, D) embeddings.
        embed_text: callable | None. list[str] -> (N, D) text embeddings (zero_shot).
        data: dict | None. the held-out split if already loaded.
        options: keyword arguments of the protocol's function (e.g. episodes=100).
    """
    import zoo.data

    data = test_data(card) if data is None else data
    if card.protocol == "verification":
        return verification(embed_fn, data, **options)
    if card.protocol in ("few_shot", "self_supervised"):
        if card.splits.get("test") == "omniglot/evaluation":
            options.setdefault("runs", zoo.data.omniglot_oneshot_runs(size=card.input_shape[0]))
        return few_shot(embed_fn, data, **options)
    if card.protocol == "zero_shot":
        if embed_text is None:
            raise ValueError(f"{card.name}: the zero_shot protocol needs embed_text")
        options.setdefault("templates", tuple(card.extras.get("templates") or ("{}",)))
        return zero_shot(embed_fn, embed_text, data, **options)
    raise ValueError(f"{card.name}: unknown protocol {card.protocol!r}; known: {sorted(GATE_METRICS)}")


def gate_metric(card, embed_fn, data=None, embed_text=None) -> float:
    """The entry's int8 gate metric (GATE_METRICS[card.protocol]) of one image embedder on its held-out split:
    the protocol's function restricted to that one number.

    Args:
        card: Card. the entry's card (protocol, splits, input shape).
        embed_fn: callable. (N, H, W, C) float32 images -> (N, D) embeddings.
        data: dict | None. the held-out split, if already loaded (`test_data(card)`).
        embed_text: callable | None. list[str] -> (N, D) text embeddings; needed by zero_shot.
    """
    data = test_data(card) if data is None else data
    if card.protocol == "verification":
        return float(verification(embed_fn, data)["verification_accuracy"])
    if card.protocol in ("few_shot", "self_supervised"):  # few_shot's 5-way 1-shot, without the rest
        x = _embed(embed_fn, data["images"])
        return float(evaluate.few_shot(x, data["labels"], 5, 1, FEW_SHOT_QUERIES, FEW_SHOT_EPISODES, seed=0)["mean"])
    if card.protocol == "zero_shot":
        if embed_text is None:
            raise ValueError(f"{card.name}: the zero_shot gate needs embed_text for the test captions")
        x = _embed(embed_fn, data["images"])
        captions = embed_text([str(c) for c in data["captions"]])
        return float(evaluate.paired_recall(x, captions, ks=(5,))["recall@5"])
    raise ValueError(f"{card.name}: no int8 gate for protocol {card.protocol!r}; known: {sorted(GATE_METRICS)}")
