"""Entries that install: `zoo package` wheels, the registry's search order over roots, and a fresh venv.

The fast tests build the `protonet` entry wheel once (`zoo.package.build_wheel`) and unpack it into a folder on
sys.path, which is what an install does to a pure wheel, to check the search order and the sha256 checks of an
installed entry in-process. The slow one builds the core wheel too and installs both into a new venv outside
the checkout, where the checkout is not importable.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo import registry
from zoo.cli import main
from zoo.package import build_wheel, is_entry_wheel
from zoo.runtime import OnnxEmbedder, entries, hub

CHECKOUT = Path(__file__).resolve().parent.parent
SOURCE = registry.EXPORTS_DIR / "protonet"
pytestmark = pytest.mark.skipif(not (SOURCE / "card.json").is_file(), reason="needs the checkout's exports/protonet")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def entry_wheel(tmp_path_factory):
    """The protonet entry wheel, built once for the module."""
    return build_wheel("protonet", tmp_path_factory.mktemp("dist"), root=registry.EXPORTS_DIR)


@pytest.fixture
def installed(entry_wheel, tmp_path, monkeypatch):
    """The entry wheel unpacked into a site folder on sys.path (a pure wheel's install); returns the entry folder."""
    site = tmp_path / "site"
    with zipfile.ZipFile(entry_wheel) as wheel:
        wheel.extractall(site)
    monkeypatch.syspath_prepend(str(site))
    return site / "keras_embedding_zoo_protonet" / "protonet"


@pytest.fixture
def empty_root(tmp_path, monkeypatch):
    """An empty local root in place of the checkout's exports/, and an empty cache."""
    monkeypatch.setenv("ZOO_EXPORTS", str(tmp_path / "root"))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "root"


def test_entry_wheel_holds_the_card_its_files_and_the_entry_point(entry_wheel):
    """The wheel is keras-embedding-zoo-protonet, declares `protonet` in the entry-point group, and holds exactly
    card.json and the files the card lists, byte for byte."""
    card = json.loads((SOURCE / "card.json").read_text())
    assert entry_wheel.name.startswith("keras_embedding_zoo_protonet-") and entry_wheel.suffix == ".whl"
    with zipfile.ZipFile(entry_wheel) as wheel:
        names = wheel.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        assert "Name: keras-embedding-zoo-protonet\n" in wheel.read(info).decode()
        points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        assert "[keras_embedding_zoo.entries]\nprotonet = keras_embedding_zoo_protonet" in points
        prefix = "keras_embedding_zoo_protonet/protonet/"
        data = {n[len(prefix):]: wheel.read(n) for n in names if n.startswith(prefix)}
    assert sorted(data) == sorted(["card.json", *card["files"]])
    assert data["card.json"] == (SOURCE / "card.json").read_bytes()
    assert {k: _sha256(v) for k, v in data.items() if k != "card.json"} == card["files"]
    assert not [n for n in names if not n.startswith(("keras_embedding_zoo_protonet/",
                                                       "keras_embedding_zoo_protonet-"))]


def test_package_replaces_its_own_wheel_and_never_a_foreign_file(entry_wheel, tmp_path, capsys):
    """`zoo package --out` rewrites an entry wheel of the same name, and refuses a foreign file of that name."""
    out = tmp_path / "dist"
    out.mkdir()
    (out / entry_wheel.name).write_bytes(b"not a wheel of ours")
    assert main(["package", "protonet", "--root", str(registry.EXPORTS_DIR), "--out", str(out)]) == 1
    assert "not an entry wheel of 'protonet'; refused" in capsys.readouterr().err
    assert (out / entry_wheel.name).read_bytes() == b"not a wheel of ours"
    (out / entry_wheel.name).unlink()
    shutil.copy(entry_wheel, out)
    assert main(["package", "protonet", "--root", str(registry.EXPORTS_DIR), "--out", str(out)]) == 0
    assert is_entry_wheel(out / entry_wheel.name, "protonet")
    assert sorted(p.name for p in out.iterdir()) == [entry_wheel.name]  # no temporary file left


def test_package_refuses_a_tampered_entry(tmp_path):
    """The entry's files are checked against its card before they are packaged."""
    shutil.copytree(SOURCE, tmp_path / "root" / "protonet")
    with open(tmp_path / "root" / "protonet" / "embedder.onnx", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        build_wheel("protonet", tmp_path / "dist", root=tmp_path / "root")
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_installed_entry_is_found_loaded_and_checked(installed, empty_root, tmp_path, capsys):
    """An installed entry package is listed with its source, runs on the runtime by name, and its files are
    sha256-checked like any other root's."""
    [entry] = [e for e in entries.installed() if e.name == "protonet"]
    assert entry.folder == installed and entry.origin.startswith("keras-embedding-zoo-protonet==")
    assert registry.list_models() == ["protonet"]
    assert registry.locate("protonet") == entry
    assert main(["list"]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert row.startswith("protonet") and row.endswith(f"package {entry.origin}")
    golden = np.load(SOURCE / "golden.npz")
    np.testing.assert_allclose(OnnxEmbedder("protonet").embed(golden["embedder__inputs"]),
                               golden["embedder__embeddings"], atol=1e-4)
    data = bytearray((installed / "embedder.onnx").read_bytes())
    data[-1] ^= 1
    (installed / "embedder.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        OnnxEmbedder("protonet")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        registry.load("protonet")


def test_search_order_root_then_package_then_cache(installed, empty_root, tmp_path, capsys):
    """With protonet in the local root, an installed package and the cache, the local root wins, then the package,
    then the cache; `zoo info` names the winner and the others on stderr."""
    hub.push(SOURCE, (tmp_path / "hub").as_uri())
    pulled = hub.pull((tmp_path / "hub").as_uri())
    shutil.copytree(SOURCE, empty_root / "protonet")
    assert [e.source for e in entries.found()["protonet"]] == ["root", "package", "cache"]
    assert registry.entry_folder("protonet") == empty_root / "protonet"
    assert main(["info", "protonet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("protonet: source root,") and "package keras-embedding-zoo-protonet==" in err
    shutil.rmtree(empty_root / "protonet")
    assert registry.entry_folder("protonet") == installed
    shutil.rmtree(installed.parent)
    assert registry.locate("protonet").source == "cache" and registry.entry_folder("protonet") == pulled


def test_unknown_entry_says_which_package_to_install(empty_root):
    """An entry that no root has: the KeyError names its package and `zoo pull`."""
    with pytest.raises(KeyError, match=r"pip install keras-embedding-zoo-facenet-triplet, or zoo pull URL"):
        registry.info("facenet_triplet")
    with pytest.raises(FileNotFoundError, match="pip install keras-embedding-zoo-facenet-triplet"):
        OnnxEmbedder("facenet_triplet")


# --- a fresh venv outside the checkout ------------------------------------------------------------


def _run(args, cwd, env, check=True):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.slow
def test_core_and_entry_wheels_work_in_a_fresh_venv(entry_wheel, tmp_path):
    """The core wheel and the protonet wheel, installed with --no-deps --no-index into a new venv outside the
    checkout: `zoo list` shows protonet from its package, `zoo embed` and `zoo.load` work, and before the entry
    wheel is installed the error names the package to install.

    The venv borrows the test venv's dependencies (TensorFlow, onnxruntime ...) through a .pth line naming its
    site-packages: `--system-site-packages` would give the base interpreter's instead, as the test venv is
    itself a venv. A .pth line only adds the folder to sys.path, so the test venv's own .pth files (the
    editable install's finder that maps `zoo` to a checkout) do not run; the test asserts that `zoo` comes from
    the new venv and that no checkout path is on sys.path.
    """
    src = tmp_path / "src"
    # A copy of the sources: the build writes build/ and *.egg-info beside them, never into the checkout.
    shutil.copytree(CHECKOUT / "zoo", src / "zoo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(CHECKOUT / name, src / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                "-w", str(wheels), str(src)], tmp_path, os.environ)
    [core] = wheels.glob("keras_embedding_zoo-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, os.environ)
    python = venv / "bin" / "python"
    site = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    site = Path(site.decode().strip())
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site / "zz_test_venv_dependencies.pth").write_text("\n".join(paths) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOO_EXPORTS", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", ZOO_CACHE=str(tmp_path / "cache"),
               KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")

    def pip_install(wheel):
        _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)], work, env)

    pip_install(core)
    where = _run([str(python), "-c",
                        "import json, sys, zoo, zoo.registry as r; print(json.dumps({'zoo': zoo.__file__, "
                        "'path': sys.path, 'finders': [repr(f) for f in sys.meta_path], "
                        "'exports': str(r.EXPORTS_DIR), 'has_exports': r.EXPORTS_DIR.is_dir()}))"], work, env)
    where = json.loads(where.stdout)
    assert Path(where["zoo"]).is_relative_to(venv), where["zoo"]
    # The test venv may live inside the checkout (.venv, as `make test` makes it): its site-packages is on the
    # path for the dependencies; no other folder of the checkout is, and none holds the checkout's `zoo`.
    deps = Path(sysconfig.get_paths()["purelib"]).resolve()
    inside = [p for p in where["path"] if p and Path(p).resolve().is_relative_to(CHECKOUT) and Path(p).resolve() != deps]
    assert not inside, where["path"]
    assert not (deps / "zoo").exists()
    assert not [f for f in where["finders"] if "editable" in f.lower()], where["finders"]
    assert not where["has_exports"]  # no exports/ beside an installed package

    # The core wheel alone: no entry, and the error says what to install.
    listed = _run(["zoo", "list"], work, env)
    assert "no published entries" in listed.stdout
    missing = _run([str(python), "-c", "import zoo; zoo.load('protonet')"], work, env, check=False)
    assert missing.returncode != 0 and "pip install keras-embedding-zoo-protonet" in missing.stderr
    info = _run(["zoo", "info", "protonet"], work, env, check=False)
    assert info.returncode == 1 and "pip install keras-embedding-zoo-protonet" in info.stderr
    assert len(info.stderr.strip().splitlines()) == 1

    pip_install(entry_wheel)
    listed = _run(["zoo", "list"], work, env).stdout.splitlines()
    assert listed[0].split()[-1] == "source"
    [row] = [line for line in listed[1:] if line.startswith("protonet ")]
    assert "package keras-embedding-zoo-protonet==" in row
    image = np.random.default_rng(0).integers(0, 256, (37, 41), dtype=np.uint8)
    Image.fromarray(image).save(work / "x.png")
    _run(["zoo", "embed", "protonet", "x.png", "--out", "e.npy"], work, env)
    np.testing.assert_allclose(np.load(work / "e.npy"), OnnxEmbedder(SOURCE).embed_files([work / "x.png"]), atol=1e-5)
    loaded = _run([str(python), "-c",
                         "import numpy as np, zoo; m = zoo.load('protonet'); from zoo.registry import locate; "
                         "g = np.load(locate('protonet').folder / 'golden.npz'); "
                         "np.save('golden.npy', np.asarray(m.predict(g['embedder__inputs'], verbose=0))); "
                         "print(locate('protonet').folder)"], work, env)
    assert Path(loaded.stdout.strip()).is_relative_to(venv)
    golden = np.load(SOURCE / "golden.npz")
    np.testing.assert_allclose(np.load(work / "golden.npy"), golden["embedder__embeddings"], atol=1e-4)
