"""Compare the self-supervised entries with protonet (supervised) and raw pixels on one few-shot protocol.

    python recipes/ssl_table.py                 # published entries in exports/, writes recipes/README.md
    python recipes/ssl_table.py --root /tmp/zoo --readme /tmp/README.md

Every row is measured here, the same way: frozen L2-normalised embeddings of the Omniglot
evaluation alphabets (659 characters, never trained on), nearest-prototype 5/20-way 1/5-shot
(mean and 95% CI over `--episodes` random episodes of 15 queries per class, seed 0, as the
recipes), Lake's 20 one-shot runs and leave-one-out retrieval recall@1. The floor is raw pixels:
the 784 pixel values with ink bright (the encoders' input polarity), L2-normalised; beside it,
conv4 with random weights (seed 0, never trained), so that what training adds over the
architecture alone shows. Entries that are not published are left out. The table goes between
the README's `ssl` markers; the rest of the file is kept.
"""

import argparse
from pathlib import Path

import zoo  # noqa: F401  (before keras: TensorFlow's oneDNN kernels on x86-64, zoo.prefer_onednn)
import keras
import numpy as np

import zoo.data
from zoo.backbones import conv4, embedder_from
from zoo import protocols, registry
from zoo.training import REPO, embed

SETTINGS = protocols.FEW_SHOT_SETTINGS
START, END = "<!-- ssl:start -->", "<!-- ssl:end -->"
HEADING = "## Self-supervised entries against protonet and raw pixels (Omniglot)"


def raw_pixels(images):
    """(N, H, W, 1) uint8 paper-bright images -> (N, H*W) L2-normalised ink-bright pixel vectors."""
    x = 1.0 - images.reshape(len(images), -1).astype(np.float32) / 255.0
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def measure(embed_fn, data, runs, episodes):
    """The few-shot protocol's numbers (`zoo.protocols.few_shot`) for one embedding function of (N, 28, 28, 1)
    images."""
    return protocols.few_shot(embed_fn, data, runs=runs, episodes=episodes)


def table(root=None, episodes=1000, classes=0):
    """The comparison as Markdown, one row per published entry plus the raw-pixel floor."""
    data = zoo.data.load("omniglot", "evaluation")
    if classes:  # a quick look on the first `classes` characters
        keep = np.isin(data["labels"], np.unique(data["labels"])[:classes])
        data = {"images": data["images"][keep], "labels": data["labels"][keep]}
    runs = zoo.data.omniglot_oneshot_runs(size=28)
    published = set(registry.list_models(root))
    keras.utils.set_random_seed(0)
    untrained = embedder_from(conv4((28, 28, 1)))
    rows = [("raw pixels (floor)", "-", "none", measure(raw_pixels, data, runs, episodes), "-"),
            ("conv4, random weights", "-", "none", measure(lambda x: embed(untrained, x.astype(np.float32)), data,
                                                            runs, episodes), "-")]
    for name in sorted(published):  # every published entry embedding the evaluation alphabets at 28x28
        card = registry.info(name, root)
        if card.splits.get("test") != "omniglot/evaluation" or card.input_shape != (28, 28, 1):
            continue
        supervision = {False: "none", True: "labels"}.get(card.trained_with_labels, "not recorded")
        embedder = registry.load(name, root=root)
        cost = f"{card.training.get('minutes', '?')} min, {card.training.get('images_per_s', '?')} img/s"
        rows.append((f"`{name}`", card.method, supervision,
                     measure(lambda x: embed(embedder, x.astype(np.float32)), data, runs, episodes), cost))
    characters = len(np.unique(data["labels"]))
    lines = [f"Omniglot evaluation alphabets ({characters} characters), {episodes} episodes per setting "
             "(mean +- 95% CI); training cost as recorded in each card.", "",
             "| embedding | method | supervision | 5-way 1-shot | 5-way 5-shot | 20-way 1-shot | 20-way 5-shot "
             "| Lake's runs | recall@1 | training |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, method, supervision, row, cost in rows:
        shots = " | ".join(f"{row[f'{w}way{s}shot']['mean']:.3f} +- {row[f'{w}way{s}shot']['ci95']:.3f}"
                           for w, s in SETTINGS)
        lines.append(f"| {label} | {method} | {supervision} | {shots} | {row['lake_oneshot_runs']:.3f} "
                     f"| {row['recall@1']:.3f} | {cost} |")
    return "\n".join(lines) + "\n"


def write_section(readme, text, start=START, end=END, heading=HEADING):
    """Put `text` between the `start` and `end` markers of `readme` (appending a section under `heading` if the
    markers are missing); the rest of the file is kept."""
    readme = Path(readme)
    current = readme.read_text() if readme.exists() else ""
    block = f"{start}\n{text}{end}"
    if start in current and end in current:
        head, rest = current.split(start, 1)
        updated = head + block + rest.split(end, 1)[1]
    else:
        updated = current.rstrip("\n") + ("\n\n" if current else "") + f"{heading}\n\n{block}\n"
    readme.write_text(updated)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="zoo root (default: exports/)")
    parser.add_argument("--readme", default=str(REPO / "recipes" / "README.md"), help="file to write the table into")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per few-shot setting")
    parser.add_argument("--classes", type=int, default=0, help="evaluation characters to use (0: all 659)")
    args = parser.parse_args(argv)
    text = table(args.root, args.episodes, args.classes)
    write_section(args.readme, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
