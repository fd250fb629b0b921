"""Fine-tuning and users' folders: the parent entry of `--init`, the `--data` folder split into train and
held-out classes, the card fields they change, and the parent's metrics on the same held-out part."""

from pathlib import Path

import numpy as np

def parent_entry(name_or_folder) -> dict:
    """A published entry to fine-tune from: {"folder", "card"}, its files checked against their sha256.

    Args:
        name_or_folder: str. an entry's folder, or an entry name or hub URL (`zoo.registry.locate`).
    """
    from zoo.registry import Card, entry_folder, verify_files

    folder = Path(name_or_folder)
    if not (folder / "card.json").is_file():
        try:
            folder = entry_folder(name_or_folder)
        except KeyError as err:
            raise ValueError(f"--init {name_or_folder}: no entry folder at that path, and {err.args[0]}") from None
    card = Card.from_json(folder)
    verify_files(folder, card)
    return {"folder": folder, "card": card}


def user_data(args, input_shape, contract, *, seed=0, min_per_class=2):
    """The user's `--data` folder as (train, held_out, record), or None without --data.

    Images go through `contract` (the parent's with --init, so fine-tuning sees what the parent saw) to the
    model's input; labelled classes (else images) are split by `--test-fraction`, seeded by the config's
    seed; train labels are renumbered 0..C-1. `record` is what the card's `training.data` keeps.

    Args:
        args: namespace from `parse_config`.
        input_shape: (H, W, C) of the model.
        contract: dict. the recipe's preprocessing contract.
        seed: int. the split's seed (the config's).
        min_per_class: int. the fewest images a labelled class may have.
    """
    if not args.data:
        return None
    from zoo.data.folders import read_folder, split_classes

    if args.parent is not None and args.parent["card"].preprocessing:
        contract = args.parent["card"].preprocessing
    data = read_folder(args.data, input_shape, contract, min_per_class=min_per_class)
    train, held_out = split_classes(data, args.test_fraction, seed=seed)
    if data["layout"] == "labelled" and len(np.unique(held_out["labels"])) < 2:
        raise ValueError(f"--data {args.data}: --test-fraction {args.test_fraction} holds out one class of "
                         f"{len(data['class_names'])}; the held-out protocols compare classes, so raise it "
                         "(or add classes)")
    train["labels"] = np.unique(train["labels"], return_inverse=True)[1]
    record = {"path": str(Path(args.data).resolve()), "layout": data["layout"], "images": int(len(data["images"])),
              "skipped": len(data["skipped"]), "test_fraction": args.test_fraction,
              "train_classes": int(len(np.unique(train["labels"]))),
              "held_out_classes": int(len(np.unique(held_out["labels"])))}
    if "class_names" in data:
        record["held_out"] = sorted(str(data["class_names"][i]) for i in np.unique(held_out["labels"]))
    print(f"[data] {args.data}: {record['images']} images ({record['skipped']} skipped), {record['train_classes']} "
          f"train and {record['held_out_classes']} held-out {'classes' if 'class_names' in data else 'images'}")
    return train, held_out, record


def user_card(card, args, record, parent, metrics) -> dict:
    """The card fields that change with --data / --init: the dataset and splits of the user's folder, the
    primary metric where the folder's protocol has other names (fewer than 5 held-out classes: N-way; unlabelled:
    copy retrieval), and the parent (its sha256 and its metrics on the same held-out part) in `extras["parent"]`."""
    card = dict(card)
    if card["primary_metric"] not in metrics:
        card["primary_metric"] = next(k for k in metrics if k.endswith("way1shot") or k == "copy_recall@1")
    if record is not None:
        where = record["path"]
        card.update(dataset=f"your folder {where} ({record['layout']}, {record['images']} images)",
                    splits={"train": f"folder:{where}#train", "test": f"folder:{where}#held_out"},
                    data_license="the user's own data")
    if parent is not None:
        card["extras"] = {**(card.get("extras") or {}), "parent": parent}
    return card


def parent_record(args, protocol, held_out, seed=0, measure=None) -> dict | None:
    """With --init: the parent's name, the sha256 of its weights, and its metrics on the same held-out part, so
    the card shows what fine-tuning bought; None otherwise.

    Args:
        args: namespace from `parse_config`.
        protocol: str. the entry's protocol, measured by its `on_folder` on the parent's image tower.
        held_out: dict | None. the held-out part (None: no metrics).
        seed: int. the protocol's seed.
        measure: callable | None. parent folder -> metrics, where more than the image tower is measured (CLIP's).
    """
    if args.parent is None:
        return None
    from zoo import protocols
    from zoo.runtime import OnnxEmbedder

    card, folder = args.parent["card"], args.parent["folder"]
    if measure is None:
        measure = lambda f: protocols.get(protocol).on_folder(OnnxEmbedder(f).embed, held_out, seed=seed)  # noqa: E731
    first = next(iter(card.towers.values()))
    return {"entry": card.name, "folder": str(folder.resolve()), "created": card.created,
            "sha256": card.files[first["keras"]],
            "metrics_on_held_out": measure(folder) if held_out is not None else None}
