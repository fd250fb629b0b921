"""Few-shot classification of held-out classes by the nearest prototype (Omniglot's evaluation alphabets)."""

from __future__ import annotations

import numpy as np

from zoo import metrics as measures

from .base import Protocol, classes_subset, embed_all, register
from .copy_retrieval import copy_retrieval

FEW_SHOT_SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))  # (way, shot), Vinyals et al. 2016 / Snell et al. 2017
FEW_SHOT_QUERIES = 15
FEW_SHOT_EPISODES = 1000
QUICK_EPISODES = 100
QUICK_CLASSES = 100  # classes of the held-out split kept by a quick run (Omniglot's evaluation has 659)


def few_shot(embed_fn, data, *, runs=None, settings=FEW_SHOT_SETTINGS, queries=FEW_SHOT_QUERIES,
             episodes=FEW_SHOT_EPISODES, seed=0) -> dict:
    """Few-shot classification of held-out classes by the nearest prototype (the mean support embedding):
    each N-way K-shot setting over seeded episodes (mean and 95% CI), Lake's 20 one-shot runs when `runs`
    (`zoo.data.omniglot_oneshot_runs`) is given, and leave-one-out retrieval recall@1.

    Reference: Snell et al. 2017, "Prototypical Networks for Few-shot Learning"; Lake et al. 2015 (the runs).
    """
    x = embed_all(embed_fn, data["images"])  # (N, D)
    labels = np.asarray(data["labels"])
    metrics = {}
    for way, shot in settings:
        fs = measures.few_shot(x, labels, way, shot, queries, episodes, seed=seed)
        metrics[f"{way}way{shot}shot"] = {"mean": fs["mean"], "ci95": fs["ci95"]}
    if runs is not None:
        shape = runs["train_images"].shape  # (R, W, H, W, C)
        train, test = (embed_all(embed_fn, runs[k].reshape(-1, *shape[2:])).reshape(*shape[:2], -1)
                       for k in ("train_images", "test_images"))
        metrics["lake_oneshot_runs"] = measures.oneshot_runs(train, test, runs["answers"])["accuracy"]
    metrics["recall@1"] = measures.retrieval(x, labels, ks=(1,))["recall@1"]
    metrics.update(classes=int(len(np.unique(labels))), episodes=int(episodes), queries=int(queries))
    return metrics


def folder_few_shot(embed_fn, held_out, seed=0) -> dict:
    """The few-shot protocol on a user's held-out classes: N-way 1- and 5-shot episodes with N, the shots and
    the queries cut to what the classes hold (no Lake's runs: those are Omniglot's)."""
    counts = np.bincount(np.unique(held_out["labels"], return_inverse=True)[1])
    way = int(min(5, len(counts)))
    settings = tuple((way, shot) for shot in (1, 5) if shot < counts.min())
    if way < 2 or not settings:
        raise ValueError(f"the held-out part has {len(counts)} classes of >= {counts.min()} images; few-shot needs "
                         "2 classes of 2 images: raise --test-fraction or add images")
    queries = int(min(15, counts.min() - max(shot for _, shot in settings)))
    return few_shot(embed_fn, held_out, settings=settings, queries=queries, seed=seed)


@register
class FewShot(Protocol):
    """`few_shot` on the card's held-out classes, with Lake's runs where the split brings them; on a user
    folder, `folder_few_shot` over labelled classes, copy retrieval over unlabelled images."""

    name = "few_shot"
    gate = "5way1shot"
    figure = "few_shot"

    def run(self, embed_fn, data, *, embed_text=None, **options) -> dict:
        options.setdefault("runs", data.get("runs"))
        return few_shot(embed_fn, data, **options)

    def shrink(self, data):
        return classes_subset(data, QUICK_CLASSES), {"episodes": QUICK_EPISODES}

    def gate_value(self, card, embed_fn, data=None, embed_text=None) -> float:
        from .base import test_data

        data = test_data(card) if data is None else data  # 5-way 1-shot alone, without the rest
        x = embed_all(embed_fn, data["images"])
        return float(measures.few_shot(x, data["labels"], 5, 1, FEW_SHOT_QUERIES, FEW_SHOT_EPISODES, seed=0)["mean"])

    def on_folder(self, embed_fn, held_out, *, seed=0, embed_text=None) -> dict:
        if held_out.get("layout") == "labelled":
            return folder_few_shot(embed_fn, held_out, seed)
        return copy_retrieval(embed_fn, held_out)
