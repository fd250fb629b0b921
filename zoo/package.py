"""Entry packages: the wheel `keras-embedding-zoo-<name>` that holds one entry's folder as package data.

    zoo package protonet --out dist/
    pip install dist/keras_embedding_zoo_protonet-*.whl     # then zoo.load("protonet") works anywhere

The wheel's package `keras_embedding_zoo_<name>` holds `<name>/` (card.json and every file it lists) and declares
it under the entry-point group `keras_embedding_zoo.entries` (`<name> = keras_embedding_zoo_<name>`), which
`zoo.runtime.entries` reads. It depends on nothing: the zoo's code comes from the core wheel (or from a copy of
`zoo/runtime` in an app), so installing an entry never pulls TensorFlow in by itself.

Built with the standard tooling, offline: a temporary project (pyproject.toml, setuptools) and
`pip wheel --no-deps --no-build-isolation --no-index`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from datetime import datetime
from pathlib import Path

from zoo import registry
from zoo.runtime import entries

__all__ = ["build_wheel", "entry_version", "is_entry_wheel"]


def entry_version(card: registry.Card) -> str:
    """The package version of an entry: its publication time, e.g. "2026.11.30.170836" (a re-published entry
    gets a newer version).

    Args:
        card: Card. the entry's card.
    """
    t = datetime.fromisoformat(card.created)
    return f"{t.year}.{t.month}.{t.day}.{t.hour * 10000 + t.minute * 100 + t.second}"


def is_entry_wheel(path, name: str) -> bool:
    """Whether `path` is an entry wheel of `name` (one this module builds), so it may be replaced.

    Args:
        path: str | Path. a file.
        name: str. the entry name.
    """
    try:
        with zipfile.ZipFile(path) as wheel:
            points = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
            text = wheel.read(points[0]).decode("utf-8") if len(points) == 1 else ""
    except (OSError, zipfile.BadZipFile, KeyError, UnicodeDecodeError):
        return False
    return f"[{entries.GROUP}]" in text and f"{name} = {entries.module_name(name)}" in text


def _toml(value: str) -> str:
    # A JSON string is a TOML basic string (the same escapes).
    return json.dumps(value)


def _project(name: str, card: registry.Card, version: str) -> str:
    module = entries.module_name(name)
    description = f"Zoo entry {name}: {card.method} on {card.dataset} (keras-embedding-zoo)"
    return f"""[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = {_toml(entries.distribution_name(name))}
version = {_toml(version)}
description = {_toml(description[:200])}
readme = "README.md"
requires-python = ">=3.9"
dependencies = []

[project.entry-points.{_toml(entries.GROUP)}]
{_toml(name)} = {_toml(module)}

[tool.setuptools]
packages = [{_toml(module)}]
include-package-data = false

[tool.setuptools.package-data]
{_toml(module)} = [{_toml(name + "/**/*")}]
"""


def _readme(name: str, card: registry.Card) -> str:
    from zoo import protocols

    value = protocols.headline(card)
    return (f"# {entries.distribution_name(name)}\n\n"
            f"The zoo entry `{name}` of keras-embedding-zoo as a package: {card.method} ({card.paper}), trained on "
            f"{card.dataset}; {card.primary_metric} {value} on its held-out protocol. Data licence: "
            f"{card.data_license}.\n\n"
            "```python\nimport zoo\n"
            f"embedder = zoo.load({name!r})          # Keras, every file sha256-checked\n"
            "from zoo.runtime import OnnxEmbedder\n"
            f"e = OnnxEmbedder({name!r})             # onnxruntime only\n```\n\n"
            f"Reproduce it with `{card.recipe}`.\n")


def build_wheel(name: str, out, root=None, version: str | None = None) -> Path:
    """Build the wheel of one entry into `out`; returns its path.

    The entry's files are checked against its card first. An entry wheel already in `out` under the same file
    name is replaced (atomically); any other file there is left alone and the build refused.

    Args:
        name: str. the entry name (found in `root`, installed packages or the cache; see `zoo.registry.locate`).
        out: str | Path. the folder to write the wheel into (created if missing).
        root: str | Path | None. local root (default: $ZOO_EXPORTS or the checkout's exports/).
        version: str | None. the package version (default: `entry_version` of its card).
    """
    if not entries.NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{name!r} is not an entry name (letters, digits, '_', '.', '-')")
    folder = registry.entry_folder(name, root)
    card = registry.Card.from_json(folder / "card.json")
    registry.verify_files(folder, card)
    version = version or entry_version(card)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zoo-package-") as tmp:
        project = Path(tmp) / "project"
        package = project / entries.module_name(name)
        (package / name).mkdir(parents=True)
        # Only the card and the files it lists: nothing stray in the folder travels.
        for relpath in ["card.json", *card.files]:
            (package / name / relpath).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / relpath, package / name / relpath)
        (package / "__init__.py").write_text(
            f'"""The zoo entry {name!r} of keras-embedding-zoo; its folder is package data (`FOLDER`)."""\n\n'
            "from pathlib import Path\n\n"
            f"NAME = {name!r}\nFOLDER = Path(__file__).resolve().parent / NAME\n", encoding="utf-8")
        (project / "pyproject.toml").write_text(_project(name, card, version), encoding="utf-8")
        (project / "README.md").write_text(_readme(name, card), encoding="utf-8")
        wheels = Path(tmp) / "wheels"
        # No network and no other package: setuptools from this environment builds it.
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "--disable-pip-version-check", "-q", "-w", str(wheels), str(project)]
        run = subprocess.run(command, capture_output=True, text=True,
                             env={**os.environ, "PIP_NO_INPUT": "1", "PYTHONWARNINGS": "ignore"})
        built = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
        if run.returncode != 0 or len(built) != 1:
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no wheel was written"]
            raise ChildProcessError(f"building the wheel of {name!r} failed (pip wheel, setuptools >= 61 needed): "
                               f"{tail[0]}")
        target = out / built[0].name
        if target.exists() and not is_entry_wheel(target, name):
            raise FileExistsError(f"{target} exists and is not an entry wheel of {name!r}; refused to overwrite it")
        # Copied beside the target, then renamed over it: a reader never sees half a wheel.
        partial = out / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            shutil.copyfile(built[0], partial)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return target
