"""Image-text retrieval and zero-shot classification of held-out captioned images (CLIP entries)."""

from __future__ import annotations

import numpy as np

from zoo import metrics as measures
from zoo.runtime.kernels import prompt_ensemble  # noqa: F401  (also zoo.protocols.prompt_ensemble)

from .base import Protocol, embed_all, register, test_data


def words(name) -> str:
    """A class name as words: 'Smileys & Emotion' -> 'smileys and emotion', 'face-smiling' -> 'face smiling'."""
    return str(name).replace("&", "and").replace("-", " ").lower()


def image_text_retrieval(embed_fn, embed_text, data) -> dict:
    """Image->text and text->image recall@1/5/10 of held-out images with one caption each (row i of image i),
    among the split's captions, and chance rates: the retrieval half of `zero_shot`, for any captioned set."""
    x = embed_all(embed_fn, data["images"])  # (N, D)
    captions = np.asarray(embed_text([str(c) for c in data["captions"]]), np.float32)  # (N, D), row i of image i
    metrics = {"test_images": int(len(x))}
    for direction, (q, g) in {"image_to_text": (x, captions), "text_to_image": (captions, x)}.items():
        for k, value in measures.paired_recall(q, g, ks=(1, 5, 10)).items():
            metrics[f"{direction}_{k}"] = value
    for k in (1, 5, 10):
        metrics[f"chance_recall@{k}"] = k / len(x)
    return metrics


def zero_shot(embed_fn, embed_text, data, *, templates, train=None) -> dict:
    """Image-text retrieval and zero-shot classification on held-out images with captions (emoji test split):
    image->text and text->image recall@1/5/10 among the split's captions; zero-shot top-1 by prompt ensembles
    over the category names, over the categories described by their subcategory names (where the split
    brings `category_descriptions`), and over the subcategories; chance and majority rates; a linear probe on
    the categories when `train` is given.

    Reference: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision".
    """
    x = embed_all(embed_fn, data["images"])  # (N, D)
    n = len(x)
    metrics = image_text_retrieval(lambda _: x, embed_text, data)
    classes = {"zero_shot_category_top1": (data["labels"], [words(c) for c in data["category_names"]])}
    if data.get("category_descriptions") is not None:
        classes["zero_shot_category_top1_with_subcategory_names"] = (
            data["labels"], [[words(n) for n in names] for names in data["category_descriptions"]])
    classes["zero_shot_subcategory_top1"] = (data["subcategory_labels"], [words(c) for c in data["subcategory_names"]])
    for key, (labels, names) in classes.items():
        text = prompt_ensemble(embed_text, names, templates)  # (C, D)
        metrics[key] = measures.zero_shot(x, labels, text)["accuracy"]
    for key, labels, names in (("category", data["labels"], data["category_names"]),
                               ("subcategory", data["subcategory_labels"], data["subcategory_names"])):
        metrics[f"{key}_majority"] = float(np.bincount(labels).max() / n)
        metrics[f"{key}_chance"] = 1.0 / len(names)
    if train is not None:
        metrics["linear_probe_category_top1"] = measures.linear_probe(
            embed_all(embed_fn, train["images"]), train["labels"], x, data["labels"])["accuracy"]
    return metrics


@register
class ZeroShot(Protocol):
    """`zero_shot` on the card's held-out captioned images, with the card's prompt templates; on a user folder
    of captions, `image_text_retrieval`."""

    name = "zero_shot"
    gate = "image_to_text_recall@5"
    needs_text = True

    def held_out(self, card, embed_fn, embed_text=None, *, data=None, quick=False, **options) -> dict:
        if embed_text is None:
            raise ValueError(f"{card.name}: the zero_shot protocol needs embed_text")
        options.setdefault("templates", tuple(card.extras.get("templates") or ("{}",)))
        return super().held_out(card, embed_fn, embed_text, data=data, quick=quick, **options)

    def run(self, embed_fn, data, *, embed_text=None, **options) -> dict:
        return zero_shot(embed_fn, embed_text, data, **options)

    def gate_value(self, card, embed_fn, data=None, embed_text=None) -> float:
        if embed_text is None:
            raise ValueError(f"{card.name}: the zero_shot gate needs embed_text for the test captions")
        data = test_data(card) if data is None else data  # each test image among all test captions
        x = embed_all(embed_fn, data["images"])
        captions = embed_text([str(c) for c in data["captions"]])
        return float(measures.paired_recall(x, captions, ks=(5,))["recall@5"])

    def on_folder(self, embed_fn, held_out, *, seed=0, embed_text=None) -> dict:
        if embed_text is None:
            raise ValueError("image-text retrieval on a folder of captions needs embed_text")
        return image_text_retrieval(embed_fn, embed_text, held_out)
