"""Hubs and the cache of pulled entries: `zoo push` / `zoo pull`, loading by URL, offline mode.

file:// and a loopback http.server go through fsspec for real. hf:// is covered by mocking huggingface_hub at
its boundary: `snapshot_download` and `HfApi` (`create_repo`, `create_branch`, `upload_folder`) are replaced by
a stand-in that keeps one folder per repository and revision, so the zoo's side (arguments, revisions, the
checks and the cache) is what is tested, not the Hub.
"""

import fnmatch
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo import registry
from zoo.cli import main
from zoo.registry import folder_sha256
from zoo.runtime import OnnxEmbedder, hub

SOURCE = registry.EXPORTS_DIR / "protonet"
pytestmark = pytest.mark.skipif(not (SOURCE / "card.json").is_file(), reason="needs the checkout's exports/protonet")
CARD = json.loads(SOURCE.joinpath("card.json").read_text()) if (SOURCE / "card.json").is_file() else {}


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty local root (so names resolve from the cache) and an empty cache of this test's own."""
    monkeypatch.setenv("ZOO_EXPORTS", str(tmp_path / "root"))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """protonet pushed once to a file:// folder: (folder, url)."""
    folder = tmp_path_factory.mktemp("hub") / "protonet"
    url = folder.as_uri()
    assert main(["push", "protonet", url]) == 0
    return folder, url


@pytest.fixture
def served(pushed, tmp_path):
    """A copy of the pushed folder served by a loopback http.server on a free port: (folder, url)."""
    folder = tmp_path / "served"
    shutil.copytree(pushed[0], folder)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _flip(path: Path, at: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def _usable(cache: Path) -> list:
    """Every folder in the cache that looks like an entry (has a card.json), outside downloads in progress."""
    return [p.parent for p in cache.rglob("card.json") if ".tmp" not in p.relative_to(cache).parts
            and ".hf" not in p.relative_to(cache).parts]


def _same_as_source(folder: Path) -> None:
    assert (folder / "card.json").read_bytes() == (SOURCE / "card.json").read_bytes()
    assert folder_sha256(folder) == CARD["files"] == folder_sha256(SOURCE)


def test_push_then_pull_into_another_cache_gives_the_same_sha256s(pushed, env, tmp_path, capsys):
    """`zoo push protonet file://X` writes the card and its files; `zoo pull file://X` into another cache gives
    the same bytes; the name then resolves from the cache, and `zoo.load(URL)` / `OnnxEmbedder(URL)` work."""
    folder, url = pushed
    _same_as_source(folder)
    assert main(["pull", url]) == 0
    assert "pulled protonet (revision " in capsys.readouterr().out
    [pulled] = _usable(env)
    assert pulled.parent == env / "protonet"
    _same_as_source(pulled)
    assert registry.locate("protonet").source == "cache" and registry.entry_folder("protonet") == pulled
    golden = np.load(SOURCE / "golden.npz")
    np.testing.assert_allclose(OnnxEmbedder(url).embed(golden["embedder__inputs"]), golden["embedder__embeddings"],
                               atol=1e-4)
    model = registry.load(url)
    np.testing.assert_allclose(np.asarray(model.predict(golden["embedder__inputs"], verbose=0)),
                               golden["embedder__embeddings"], atol=1e-4)
    assert _usable(env) == [pulled]  # loading by URL again reused the cached revision


def test_push_refuses_a_folder_that_is_no_entry_and_http(tmp_path, capsys):
    """A push never writes over files the zoo did not write, and http(s) is read-only."""
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    assert main(["push", "protonet", foreign.as_uri()]) == 1
    assert "no card.json, so it is no zoo entry; refused" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["todo.txt"]
    assert main(["push", "protonet", "http://127.0.0.1:9/x"]) == 1
    assert "read-only" in capsys.readouterr().err


def test_served_copy_pulls_the_same_way(served, env):
    """A loopback http.server: card.json first, then the files it lists, each checked; `--name` keeps it under
    another name."""
    folder = hub.pull(served[1])
    _same_as_source(folder)
    assert registry.locate("protonet").origin == served[1].rstrip("/")
    assert main(["pull", served[1], "--name", "glyphs"]) == 0
    assert registry.info("glyphs").name == "protonet"
    assert registry.entry_folder("glyphs") == env / "glyphs" / folder.name
    _same_as_source(registry.entry_folder("glyphs"))


def test_file_flipped_on_the_server_is_refused_naming_it(served, env, capsys):
    """One flipped byte on the server: the pull fails in one line naming the file, and keeps nothing."""
    _flip(served[0] / "embedder.onnx")
    assert main(["pull", served[1]]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch for embedder.onnx" in err and len(err.strip().splitlines()) == 1
    assert _usable(env) == [] and not list((env / ".tmp").iterdir())
    with pytest.raises(KeyError, match="no zoo entry 'protonet'"):
        registry.locate("protonet")


def test_card_listing_a_path_outside_the_entry_is_refused(served, env, tmp_path):
    """A card naming '../x' (or an absolute path) is refused before anything is fetched: pulls write only into
    the cache."""
    card = json.loads((served[0] / "card.json").read_text())
    card["files"]["../../escaped.txt"] = "0" * 64
    (served[0] / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="not a plain path inside the entry"):
        hub.pull(served[1])
    assert not list(tmp_path.rglob("escaped.txt")) and _usable(env) == []


def test_interrupted_pull_leaves_nothing_loadable_and_the_next_completes(pushed, env, monkeypatch):
    """An exception after three files: no entry appears, the download folder is gone, the next pull completes."""
    real = hub._fsspec_source

    def failing(url):
        card, fetch = real(url)
        count = []

        def fetch_some(relpath, dst):
            if len(count) == 3:
                raise ConnectionResetError("the network went away")
            count.append(relpath)
            fetch(relpath, dst)

        return card, fetch_some

    monkeypatch.setattr(hub, "_fsspec_source", failing)
    with pytest.raises(ConnectionResetError):
        hub.pull(pushed[1])
    assert _usable(env) == [] and hub.cached(pushed[1]) is None and hub.cached_entries() == []
    with pytest.raises(KeyError):
        registry.locate("protonet")
    monkeypatch.setattr(hub, "_fsspec_source", real)
    _same_as_source(hub.pull(pushed[1]))


def test_killed_pull_leaves_nothing_loadable_and_the_next_cleans_up_and_completes(pushed, env):
    """A process killed (os._exit) after three files leaves a partial download folder that nothing lists; the
    next pull removes it and completes."""
    code = ("import os, sys; from zoo.runtime import hub\n"
            "real = hub._fsspec_source\n"
            "def killed(url):\n"
            "    card, fetch = real(url); done = []\n"
            "    def some(relpath, dst):\n"
            "        if len(done) == 3: os._exit(9)\n"
            "        done.append(relpath); fetch(relpath, dst)\n"
            "    return card, some\n"
            "hub._fsspec_source = killed\n"
            "hub.pull(sys.argv[1])\n")
    result = subprocess.run([sys.executable, "-c", code, pushed[1]], env={**os.environ, "ZOO_CACHE": str(env)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 9, result.stderr
    [partial] = (env / ".tmp").iterdir()
    assert len([p for p in partial.rglob("*") if p.is_file()]) == 3 and not (partial / "card.json").exists()
    assert _usable(env) == [] and hub.cached_entries() == []
    with pytest.raises(KeyError):
        registry.locate("protonet")
    _same_as_source(hub.pull(pushed[1]))
    assert not partial.exists() and not list((env / ".tmp").iterdir())


def test_offline_embeds_from_the_cache_and_fails_in_one_line_otherwise(pushed, env, tmp_path, monkeypatch, capsys):
    """ZOO_OFFLINE=1: `zoo embed` by name and by URL reads the cache without touching the hub (here deleted);
    an entry or URL not in the cache fails in one line that says offline mode is on."""
    hub_copy = tmp_path / "hub"
    shutil.copytree(pushed[0], hub_copy)
    url = hub_copy.as_uri()
    hub.pull(url)
    shutil.rmtree(hub_copy)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 31), dtype=np.uint8)).save(tmp_path / "x.png")
    expected = OnnxEmbedder(SOURCE).embed_files([tmp_path / "x.png"])
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    for entry in ("protonet", url):
        assert main(["embed", entry, str(tmp_path / "x.png"), "--out", str(tmp_path / "e.npy"), "--overwrite"]) == 0
        np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=1e-6)
    capsys.readouterr()
    for entry, says in (("simclr", "no zoo entry 'simclr'"), (f"{url}-other", "is not in the cache")):
        assert main(["embed", entry, str(tmp_path / "x.png"), "--out", str(tmp_path / "f.npy")]) == 1
        err = capsys.readouterr().err
        assert says in err and "ZOO_OFFLINE=1" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "f.npy").exists()


def test_runtime_loads_by_name_and_url_without_keras(pushed, env):
    """In a fresh process `zoo.runtime` loads a cached entry by name without fsspec, and by file:// URL with
    fsspec but without huggingface_hub; never Keras or TensorFlow."""
    hub.pull(pushed[1])
    code = ("import sys; from zoo.runtime import OnnxEmbedder\n"
            "OnnxEmbedder('protonet')\n"
            "heavy = {'keras', 'tensorflow', 'jax', 'fsspec', 'huggingface_hub', 'zoo.registry'}\n"
            "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
            "OnnxEmbedder(sys.argv[1])\n"
            "assert 'fsspec' in sys.modules\n"
            "assert not (heavy - {'fsspec'}) & set(sys.modules), (heavy - {'fsspec'}) & set(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code, pushed[1]], check=True, capture_output=True, timeout=120,
                   env={**os.environ, "ZOO_EXPORTS": str(env.parent / "root"), "ZOO_CACHE": str(env)})


# --- hf:// through a stand-in for huggingface_hub ----------------------------------------------------


class FakeHub:
    """huggingface_hub's boundary: one folder per (repository, revision); records the calls it gets."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []
        hub_self = self

        class Api:
            def create_repo(self, repo_id, **kwargs):
                hub_self.calls.append(("create_repo", repo_id, kwargs))

            def create_branch(self, repo_id, *, branch, **kwargs):
                hub_self.calls.append(("create_branch", repo_id, branch))

            def upload_folder(self, *, repo_id, folder_path, revision=None, allow_patterns=None, **kwargs):
                hub_self.calls.append(("upload_folder", repo_id, revision, sorted(allow_patterns)))
                target = hub_self.folder(repo_id, revision or "main")
                for path in Path(folder_path).rglob("*"):
                    rel = path.relative_to(folder_path).as_posix()
                    if path.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns or ["*"]):
                        (target / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, target / rel)

        self.Api = Api

    def folder(self, repo_id, revision):
        return self.root / repo_id / revision

    def snapshot_download(self, repo_id, *, revision=None, cache_dir=None, **kwargs):
        self.calls.append(("snapshot_download", repo_id, revision, cache_dir))
        folder = self.folder(repo_id, revision or "main")
        if not folder.is_dir():
            raise RuntimeError(f"404 Client Error: Revision Not Found for {repo_id}@{revision}")
        return str(folder)


@pytest.fixture
def fake_hf(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    fake = FakeHub(tmp_path / "hf")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.Api)
    return fake


def test_hf_push_and_pull_a_revision(fake_hf, env, capsys):
    """`zoo push protonet hf://me/protonet@v1` creates the repository and branch and uploads the card and its
    files in one commit; `zoo pull` / `OnnxEmbedder` of that revision call snapshot_download with it, into the
    zoo's cache, and give the same files."""
    assert main(["push", str(SOURCE), "hf://me/protonet@v1"]) == 0  # an entry folder, as well as a name
    names = [c[0] for c in fake_hf.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert fake_hf.calls[1] == ("create_branch", "me/protonet", "v1")
    assert fake_hf.calls[2] == ("upload_folder", "me/protonet", "v1", sorted(["card.json", *CARD["files"]]))
    assert main(["pull", "hf://me/protonet@v1"]) == 0
    assert fake_hf.calls[-1] == ("snapshot_download", "me/protonet", "v1", str(env / ".hf"))
    _same_as_source(registry.entry_folder("protonet"))
    assert registry.locate("protonet").origin == "hf://me/protonet@v1"
    golden = np.load(SOURCE / "golden.npz")
    np.testing.assert_allclose(OnnxEmbedder("hf://me/protonet@v1").embed(golden["embedder__inputs"]),
                               golden["embedder__embeddings"], atol=1e-4)
    assert main(["pull", "hf://me/protonet@v2"]) == 1  # no such revision: one line, nothing kept
    err = capsys.readouterr().err
    assert "hf://me/protonet@v2" in err and "Revision Not Found" in err and len(err.strip().splitlines()) == 1


def test_hf_tampered_file_is_refused_and_offline_reads_the_cache_only(fake_hf, env, monkeypatch):
    """A file that differs from the card in the Hub's snapshot is refused; HF_HUB_OFFLINE=1 (like ZOO_OFFLINE=1)
    answers from the zoo's cache without calling snapshot_download, and fails for a revision not in it."""
    hub.push(SOURCE, "hf://me/protonet")
    bad = fake_hf.folder("me/protonet", "bad")
    shutil.copytree(fake_hf.folder("me/protonet", "main"), bad)
    _flip(bad / "saved_model" / "saved_model.pb")
    with pytest.raises(ValueError, match="sha256 mismatch for saved_model/saved_model.pb"):
        hub.pull("hf://me/protonet@bad")
    assert _usable(env) == []
    folder = hub.pull("hf://me/protonet")  # the default revision, main
    calls = len(fake_hf.calls)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.pull("hf://me/protonet@main") == folder
    assert OnnxEmbedder("hf://me/protonet").card["name"] == "protonet"
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1: hf://me/protonet@bad is not in the cache"):
        hub.pull("hf://me/protonet@bad")
    assert len(fake_hf.calls) == calls


def test_cache_location_and_hub_urls(monkeypatch, tmp_path):
    """The cache is $ZOO_CACHE, else $XDG_CACHE_HOME/keras-embedding-zoo, else ~/.cache/keras-embedding-zoo;
    hf:// URLs default to the revision main, and a malformed one is refused in one line."""
    monkeypatch.delenv("ZOO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "keras-embedding-zoo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "keras-embedding-zoo"
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "zc"))
    assert hub.cache_dir() == tmp_path / "zc"
    assert hub.parse_hf("hf://me/protonet") == ("me/protonet", "main")
    assert hub.parse_hf("hf://me/protonet@refs/pr/1") == ("me/protonet", "refs/pr/1")
    with pytest.raises(ValueError, match="expected hf://owner/repo"):
        hub.pull("hf://protonet")
    assert not (tmp_path / "zc" / "protonet").exists()
