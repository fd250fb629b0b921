"""Fine-tuning on your own data, measured: ORL subjects 1-30 as a labelled folder of PNGs fine-tune
facenet_triplet; subjects 31-40 (never seen by either model) judge the child against its parent.

    python benchmarks/own_data.py [--epochs 3] [--steps-per-epoch 20] [--out benchmarks/results/own_data.json]

It writes ORL's 400 grey 92x112 faces as DIR/s<N>/<k>.png, runs `python recipes/face.py --data DIR/train
--init facenet_triplet --name orl_finetuned --root R ...` (the preset is the parent's; timed), then embeds subjects 31-40 from their files through each entry's contract (zoo.runtime:
MTCNN alignment, 48x48) and prints the verification metrics (zoo.protocols.verification: every
same-subject pair and as many different-subject pairs, 10 folds) of parent and child, the parent's with the
faces only resized to 48x48 (a baseline without alignment), and the card's own held-out metrics (the
recipe's split of subjects 1-30).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import zoo.data
from zoo import protocols, registry
from zoo.runtime import OnnxEmbedder, cpu_features

REPO = Path(__file__).resolve().parent.parent


def write_orl(folder) -> tuple[Path, list[Path], np.ndarray]:
    """ORL as files: subjects 1-30 in folder/train/s<N>/, the paths and labels of subjects 31-40."""
    orl = zoo.data.load("orl", "all")
    test_files, test_labels = [], []
    for image, subject, index in zip(orl["images"], orl["labels"], orl["image_index"]):
        part = "train" if subject < 30 else "test"
        path = folder / part / f"s{subject + 1}" / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(path)
        if part == "test":
            test_files.append(path)
            test_labels.append(int(subject))
    return folder / "train", test_files, np.array(test_labels)


def verification_on_files(folder, files, labels, resized=False) -> dict:
    """Verification of subjects 31-40 from their files through the entry's contract, or (`resized`) with each
    grey 92x112 face only stretched to 48x48 (Pillow's BOX) and repeated to RGB, the issue's baseline."""
    embedder = OnnxEmbedder(folder)
    if resized:
        faces = [np.asarray(Image.open(f).convert("RGB").resize((48, 48), Image.BOX)) for f in files]
        embeddings = embedder.embed(np.stack(faces))
    else:
        embeddings = embedder.embed_files(files)
    m = protocols.verification(lambda _: embeddings, {"images": embeddings, "labels": labels})
    return {k: m[k] for k in ("verification_accuracy", "auc", "eer", "pairs")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--parent", default="facenet_triplet")
    parser.add_argument("--out", default="benchmarks/results/own_data.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_dir, test_files, test_labels = write_orl(tmp / "orl")
        command = [sys.executable, str(REPO / "recipes" / "face.py"), "--data", str(train_dir),
                   "--init", args.parent, "--name", "orl_finetuned", "--root", str(tmp / "R"),
                   "--workdir", str(tmp / "work"), "--epochs", str(args.epochs),
                   "--steps-per-epoch", str(args.steps_per_epoch)]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        minutes = (time.perf_counter() - start) / 60
        child = registry.info("orl_finetuned", tmp / "R")
        results = {
            "cpu": cpu_features(), "command": " ".join(["python", "recipes/face.py", *command[2:]]),
            "minutes_including_publish": round(minutes, 2), "training_minutes": child.training.get("minutes"),
            "subjects_31_40": {"parent": verification_on_files(registry.exports_dir() / args.parent, test_files,
                                                               test_labels),
                               "parent_resized_48": verification_on_files(registry.exports_dir() / args.parent,
                                                                          test_files, test_labels, resized=True),
                               "child": verification_on_files(tmp / "R" / "orl_finetuned", test_files, test_labels)},
            "card_held_out": {"child": {k: child.metrics[k] for k in ("verification_accuracy", "auc")},
                              "parent": {k: child.extras["parent"]["metrics_on_held_out"][k]
                                         for k in ("verification_accuracy", "auc")},
                              "classes": child.training["data"]["held_out"]},
        }
    judged = results["subjects_31_40"]
    results["auc_gain_points"] = {  # child over parent, in AUC points
        "same_contract": round(100 * (judged["child"]["auc"] - judged["parent"]["auc"]), 2),
        "parent_resized_48": round(100 * (judged["child"]["auc"] - judged["parent_resized_48"]["auc"]), 2)}
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
