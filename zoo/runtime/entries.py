"""Where zoo entries are found: the one search order that `zoo.registry` and `zoo.runtime` share.

An entry name is looked up, in this order, in
1. the local root: `root=` (or `--root`), else $ZOO_EXPORTS, else the checkout's `exports/` (next to the `zoo`
   package, so only in a development checkout);
2. installed entry packages: distributions (`pip install keras-embedding-zoo-<name>`) that declare the entry under
   the entry-point group `keras_embedding_zoo.entries`, holding its folder as package data;
3. the cache of pulled entries ($ZOO_CACHE, default `$XDG_CACHE_HOME/keras-embedding-zoo`, see `zoo.runtime.hub`).

The first root that has a name wins; `zoo list` and `zoo info` say which one it was (`Entry.source`). A URL
(`hf://owner/repo[@rev]`, `file://`, `https://`, `s3://` ...) is pulled into the cache (or, offline, read from it).

Standard library only: no numpy, no Keras, no TensorFlow; fsspec and huggingface_hub are imported by
`zoo.runtime.hub` only when a URL is pulled.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import importlib.util
import os
import re
from pathlib import Path

from . import hub

__all__ = ["GROUP", "EXPORTS_DIR", "NAME_PATTERN", "Entry", "local_root", "folder_entries", "installed", "found",
           "locate", "resolve", "is_url", "distribution_name", "module_name", "roots_description", "not_found"]

# Entry-point group under which an entry package declares its entry: `name = module` (the package holding
# the folder `name/` as package data).
GROUP = "keras_embedding_zoo.entries"
# The checkout's root of published entries: `exports/` beside the `zoo` package.
EXPORTS_DIR = Path(__file__).resolve().parent.parent.parent / "exports"
# Entry names that are safe as a folder name and as a distribution name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry found in one root.

    Args:
        name: str. the entry name, e.g. "protonet".
        folder: Path. its folder (card.json and the files the card lists).
        source: str. which root: "root" (`root=` or $ZOO_EXPORTS), "exports" (the checkout's), "package" (an
            installed entry package) or "cache" (pulled from a hub).
        origin: str. where in that root: the root folder, the distribution "name==version", or the URL pulled from.
    """

    name: str
    folder: Path
    source: str
    origin: str

    def describe(self) -> str:
        """One line for people: e.g. "package keras-embedding-zoo-protonet==2026.11.30.170836"."""
        return self.source if self.source in ("root", "exports") else f"{self.source} {self.origin}"


def is_url(text) -> bool:
    """Whether `text` is a hub URL (`scheme://...`) rather than a name or a path.

    Args:
        text: object. anything; only a str can be a URL.
    """
    return isinstance(text, str) and bool(_URL.match(text))


def distribution_name(name: str) -> str:
    """The distribution of an entry package, normalised as PyPI does.

    "facenet_triplet" -> "keras-embedding-zoo-facenet-triplet".

    Args:
        name: str. the entry name.
    """
    return "keras-embedding-zoo-" + re.sub(r"[-_.]+", "-", name).lower()


def module_name(name: str) -> str:
    """The importable package of an entry package: "facenet_triplet" -> "keras_embedding_zoo_facenet_triplet".

    Args:
        name: str. the entry name.
    """
    return "keras_embedding_zoo_" + re.sub(r"[-_.]+", "_", name).lower()


def local_root(root=None) -> tuple[str, Path] | None:
    """(source, folder) of the local root: `root`, else $ZOO_EXPORTS, else the checkout's `exports/` if there is one.

    Args:
        root: str | Path | None. explicit root folder.
    """
    if root:
        return "root", Path(root)
    if os.environ.get("ZOO_EXPORTS"):
        return "root", Path(os.environ["ZOO_EXPORTS"])
    return ("exports", EXPORTS_DIR) if EXPORTS_DIR.is_dir() else None


def folder_entries(source: str, folder: Path) -> list[Entry]:
    """The entries of a root folder: its subfolders with a card.json.

    Args:
        source: str. the source to record ("root" or "exports").
        folder: Path. the root folder.
    """
    if not folder.is_dir():
        return []
    # Hidden folders are publish()'s temporary and replaced entries.
    return [Entry(p.name, p, source, str(folder)) for p in sorted(folder.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / "card.json").is_file()]


def installed() -> list[Entry]:
    """Entries of the installed entry packages (entry-point group `keras_embedding_zoo.entries`), in sys.path order.

    A package is located, never imported: listing entries runs no code of theirs.
    """
    out = []
    for point in importlib.metadata.entry_points(group=GROUP):
        if not NAME_PATTERN.fullmatch(point.name):
            continue
        try:
            spec = importlib.util.find_spec(point.module)
        except (ImportError, ValueError):
            spec = None
        locations = list(spec.submodule_search_locations or []) if spec else []
        folder = next((Path(p) / point.name for p in locations if (Path(p) / point.name / "card.json").is_file()), None)
        if folder is None:
            continue  # a broken or half-removed install: nothing loadable
        dist = point.dist
        origin = f"{dist.metadata['Name']}=={dist.version}" if dist is not None else point.module
        out.append(Entry(point.name, folder, "package", origin))
    return out


def found(root=None) -> dict[str, list[Entry]]:
    """Every entry of every root, by name, each list in search order (the first one wins).

    Args:
        root: str | Path | None. the local root (default: $ZOO_EXPORTS or the checkout's exports/).
    """
    everything = []
    local = local_root(root)
    if local:
        everything += folder_entries(*local)
    everything += installed()
    everything += [Entry(name, folder, "cache", url) for name, folder, url in hub.cached_entries()]
    out: dict[str, list[Entry]] = {}
    for entry in everything:
        out.setdefault(entry.name, []).append(entry)
    return out


def roots_description(root=None) -> str:
    """The roots searched, in order, for messages.

    Args:
        root: str | Path | None. the local root (default: $ZOO_EXPORTS or the checkout's exports/).
    """
    local = local_root(root)
    parts = [f"{local[1]} ({'root' if local[0] == 'root' else 'the checkout'})"] if local else []
    return ", ".join(parts + ["installed entry packages", f"the cache {hub.cache_dir()}"])


def not_found(name: str, root=None, names=None) -> str:
    """The message for an unknown entry: where it was looked for, close names, and how to get it.

    Args:
        name: str. the name asked for.
        root: str | Path | None. the local root (default: $ZOO_EXPORTS or the checkout's exports/).
        names: list[str] | None. the names that were found (default: looked up again).
    """
    names = sorted(found(root)) if names is None else names
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"did you mean {close}? " if close else ""
    get = f"pip install {distribution_name(name)}" if NAME_PATTERN.fullmatch(name) else "pip install its package"
    offline = f" ({hub.offline_reason()}: nothing is downloaded)" if hub.offline_reason() else ""
    return (f"no zoo entry {name!r} in {roots_description(root)}; {hint}available: {names}; to get it: {get}, "
            f"or zoo pull URL (hf://owner/repo, https://..., file://...){offline}")


def locate(name: str, root=None) -> Entry:
    """The entry that a name or a URL stands for; a URL is pulled into the cache first (offline: read from it).

    Args:
        name: str. an entry name ("protonet") or a hub URL ("hf://owner/repo@rev", "file:///srv/protonet").
        root: str | Path | None. the local root (default: $ZOO_EXPORTS or the checkout's exports/).
    """
    if is_url(name):
        folder = hub.pull(name)
        return Entry(folder.parent.name, folder, "cache", name)
    everything = found(root)
    if name not in everything:
        raise KeyError(not_found(name, root, sorted(everything)))
    return everything[name][0]


def resolve(path, root=None) -> Path:
    """The folder or file behind what a user typed: an existing path as it is, else an entry name or a URL.

    Raises KeyError for a name that no root has, FileNotFoundError for a path that does not exist.

    Args:
        path: str | Path. an export folder, an .onnx file, an entry name, or a hub URL.
        root: str | Path | None. the local root (default: $ZOO_EXPORTS or the checkout's exports/).
    """
    if is_url(path):
        return locate(path, root).folder
    candidate = Path(path)
    # A folder of that name in the working directory counts only if it is an entry folder.
    if candidate.is_file() or (candidate / "card.json").is_file():
        return candidate
    if isinstance(path, str) and NAME_PATTERN.fullmatch(path) and not path.endswith(".onnx"):
        return locate(path, root).folder
    if candidate.is_dir():
        return candidate  # the runtime says what the folder lacks
    raise FileNotFoundError(f"no export folder or ONNX file at {candidate}")
