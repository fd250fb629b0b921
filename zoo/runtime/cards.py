"""An entry's card and files on disk: `card.json`, reads checked against the card's sha256, tower files.

Standard library only; a missing entry is a FileNotFoundError, a tampered file a ValueError.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import entries

__all__ = ["CARD_METADATA_KEY", "sha256", "read_card", "read_checked", "resolve", "tower_file"]

# The ONNX metadata_props key that holds the card, so a bare .onnx file still knows its entry.
CARD_METADATA_KEY = "zoo_card"


def sha256(data: bytes) -> str:
    """The hex sha256 digest of `data`, as card.json records it.

    Args:
        data: bytes. a file's content.
    """
    return hashlib.sha256(data).hexdigest()


def read_card(folder) -> dict:
    """Read `card.json` of an export folder as a plain dict.

    Args:
        folder: str | Path. an export folder, e.g. `exports/facenet_triplet`.
    """
    path = Path(folder) / "card.json"
    if not path.is_file():
        raise FileNotFoundError(f"no card.json in the export folder: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def read_checked(folder: Path, relpath: str, card: dict, verify: bool) -> bytes:
    """Read a file of an export folder, checking its sha256 against `card["files"]`.

    Args:
        folder: Path. the export folder.
        relpath: str. the file's path inside it, as `card["files"]` keys it.
        card: dict. the folder's card.
        verify: bool. check the digest (False: read the file as it is).
    """
    path = folder / relpath
    if not path.is_file():
        raise FileNotFoundError(f"missing file of the export: {path}")
    data = path.read_bytes()
    if verify:
        expected = (card.get("files") or {}).get(relpath)
        if expected is None:
            raise ValueError(
                f"card.json in {folder} records no sha256 for {relpath!r}; "
                "pass verify=False to load an unverified file"
            )
        actual = sha256(data)
        if actual != expected:
            raise ValueError(
                f"sha256 mismatch for {path}: expected {expected} (card.json), got {actual}; "
                "the file was modified or corrupted, re-publish or re-download the entry"
            )
    return data


def resolve(path) -> Path:
    """An export folder or .onnx file as given, else the folder of an entry name or hub URL.

    Args:
        path: str | Path. a folder, an .onnx file, an entry name or a hub URL.
    """
    try:
        return entries.resolve(path)
    except KeyError as err:
        # The runtime's contract: a missing model is a FileNotFoundError, with the registry's hint.
        raise FileNotFoundError(f"no export folder or ONNX file at {path}, and {err.args[0]}") from None


def tower_file(card: dict, input_name: str, folder: Path) -> str:
    """The ONNX file of the first tower whose input is `input_name` ("images" or "token_ids").

    Args:
        card: dict. the entry's card.
        input_name: str. the tower's graph input.
        folder: Path. the export folder, named in the error.
    """
    for role, tower in (card.get("towers") or {}).items():
        if tower.get("input") == input_name:
            return tower.get("onnx", f"{role}.onnx")
    raise ValueError(f"card.json in {folder} lists no tower with input {input_name!r}")
