"""Share entries through hubs: push an entry folder to a URL, pull one into the verified cache.

URLs: `hf://owner/repo[@revision]` goes through `huggingface_hub` (`HfApi.upload_folder`, `snapshot_download`);
any other goes through `fsspec`: `file://`, `http(s)://` (read-only: card.json first, then the files it lists),
`s3://`, `gs://` ... where the user has that fsspec backend. Both libraries are imported only when a URL needs
them (`pip install "keras-embedding-zoo[hub]"`).

The cache ($ZOO_CACHE, default `$XDG_CACHE_HOME/keras-embedding-zoo`, else `~/.cache/keras-embedding-zoo`):

    <name>/<revision>/      an entry: card.json and every file it lists, each checked against its sha256
    <name>/.latest          {"revision", "url", "pulled"}: the revision a name stands for (the last one pulled)
    .refs/<key>.json        {"url", "name", "revision", "pulled"}: what a URL gave when last pulled (offline use)
    .tmp/pull-*/            downloads in progress
    .hf/                    huggingface_hub's own cache of hf:// repositories

The revision is the first 16 hex digits of the sha256 of the card.json, which lists the sha256 of every other
file, so one revision is one content. A pull downloads into `.tmp/`, checks every file, and only then renames
the folder into place (atomic): an interrupted or refused pull leaves nothing that looks like an entry, and the
next pull starts clean. `ZOO_OFFLINE=1` (or `HF_HUB_OFFLINE=1`) reads the cache only.

Standard library only at import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

__all__ = ["cache_dir", "offline_reason", "pull", "push", "cached", "cached_entries", "parse_hf"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HF = re.compile(r"hf://(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[^@\s]+))?/?")
_TRUE = ("1", "true", "yes", "on")
_HTTP = ("http", "https")


def cache_dir(cache=None) -> Path:
    """The cache of pulled entries: `cache`, else $ZOO_CACHE, else `$XDG_CACHE_HOME/keras-embedding-zoo`.

    Args:
        cache: str | Path | None. explicit cache folder.
    """
    if cache:
        return Path(cache)
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keras-embedding-zoo"


def offline_reason() -> str | None:
    """"ZOO_OFFLINE=1" or "HF_HUB_OFFLINE=1" when one of them is set (pulls then read the cache only), else None."""
    for key in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(key, "").strip().lower() in _TRUE:
            return f"{key}=1"
    return None


def parse_hf(url: str) -> tuple[str, str]:
    """(repo_id, revision) of `hf://owner/repo[@revision]`; the revision defaults to "main".

    Args:
        url: str. the hf:// URL.
    """
    match = _HF.fullmatch(url.strip())
    if not match:
        raise ValueError(f"{url}: expected hf://owner/repo or hf://owner/repo@revision")
    return match["repo"], match["revision"] or "main"


def _canonical(url: str) -> str:
    url = url.strip()
    if url.startswith("hf://"):
        repo, revision = parse_hf(url)
        return f"hf://{repo}@{revision}"
    return url.rstrip("/")


def _sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, value) -> None:
    """Write JSON atomically: a temporary file beside it, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _safe_relpath(relpath, url) -> str:
    """A card's file path, refused unless it stays inside the entry folder: no absolute path, '..' or hidden part."""
    parts = PurePosixPath(relpath).parts if isinstance(relpath, str) else ()
    if (not parts or "\\" in relpath or relpath.startswith("/") or ":" in relpath
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts) or relpath == "card.json"):
        raise ValueError(f"{url}: card.json lists the file {relpath!r}, which is not a plain path inside the entry; "
                         "refused")
    return relpath


def _parse_card(data: bytes, url: str) -> dict:
    """The card of a hub entry, checked enough to download it safely: a name and a sha256 per file."""
    try:
        card = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{url}: card.json is not valid JSON ({err})") from None
    if not isinstance(card, dict) or not isinstance(card.get("name"), str):
        raise ValueError(f"{url}: card.json is not a zoo card (no 'name')")
    files = card.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError(f"{url}: card.json lists no files with their sha256; nothing could be verified")
    for relpath, digest in files.items():
        _safe_relpath(relpath, url)
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
            raise ValueError(f"{url}: card.json gives {relpath!r} no sha256 (got {digest!r})")
    return card


def _check_name(name: str, url: str) -> str:
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ValueError(f"{url}: {name!r} is not a usable entry name (letters, digits, '_', '.', '-'); pass --name")
    return name


def _complete(folder: Path) -> bool:
    # card.json is the last file put into a pull's folder, and the folder appears by rename once all are checked.
    return (folder / "card.json").is_file()


def cached(url: str, cache=None) -> Path | None:
    """The cached folder of what `url` gave when last pulled, or None.

    Args:
        url: str. the hub URL.
        cache: str | Path | None. the cache (default: see `cache_dir`).
    """
    url = _canonical(url)
    root = cache_dir(cache)
    ref = _read_json(root / ".refs" / f"{_key(url)}.json")
    if not isinstance(ref, dict) or ref.get("url") != url:
        return None
    folder = root / str(ref.get("name")) / str(ref.get("revision"))
    return folder if _NAME.fullmatch(str(ref.get("name"))) and _complete(folder) else None


def _key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def cached_entries(cache=None) -> list[tuple[str, Path, str]]:
    """(name, folder, url) of every entry in the cache, at the revision its name stands for.

    Args:
        cache: str | Path | None. the cache (default: see `cache_dir`).
    """
    root = cache_dir(cache)
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir() or not _NAME.fullmatch(entry.name):
            continue
        latest = _read_json(entry / ".latest") or {}
        folder = entry / str(latest.get("revision", ""))
        url = latest.get("url", "?")
        if not (latest.get("revision") and _complete(folder)):
            # No record of the last pull (it stopped after the rename): the newest complete revision.
            revisions = sorted((p for p in entry.iterdir() if not p.name.startswith(".") and _complete(p)),
                               key=lambda p: p.stat().st_mtime)
            if not revisions:
                continue
            folder, url = revisions[-1], "?"
        out.append((entry.name, folder, url))
    return out


def _clean_stale(tmp_root: Path) -> None:
    """Remove the download folders of pulls on this host whose process is gone (killed midway)."""
    if not tmp_root.is_dir():
        return
    host = socket.gethostname()
    for folder in tmp_root.iterdir():
        match = re.fullmatch(r"pull-(?P<host>.+)-(?P<pid>\d+)-\w+", folder.name)
        if not match or match["host"] != host:
            continue
        try:
            os.kill(int(match["pid"]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # alive, under another user


@contextlib.contextmanager
def _hub_errors(url: str):
    """A hub library's own exceptions (HTTP, auth, network) as OSError, so callers see one line naming the URL."""
    try:
        yield
    except (OSError, ValueError):
        raise
    except Exception as err:  # noqa: BLE001  (huggingface_hub, aiohttp, botocore ... each have their own)
        raise OSError(f"{url}: {type(err).__name__}: {err}") from err


def _hf_source(url: str, cache: Path):
    """(card.json bytes, fetch(relpath, dst)) of an hf:// URL: one `snapshot_download` into the cache's .hf/."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"{url}: hf:// URLs need huggingface_hub: pip install 'keras-embedding-zoo[hub]'") from None
    repo, revision = parse_hf(url)
    with _hub_errors(url):
        snapshot = Path(snapshot_download(repo, revision=revision, cache_dir=str(cache / ".hf"),
                                          library_name="keras-embedding-zoo"))
    card = snapshot / "card.json"
    if not card.is_file():
        raise FileNotFoundError(f"{url}: no card.json in the repository; not a zoo entry (push one with zoo push)")

    def fetch(relpath, dst: Path):
        src = snapshot / relpath
        if not src.is_file():
            raise FileNotFoundError(f"{url}: the repository lacks {relpath}, listed in its card.json")
        try:
            # The snapshot's files link to blobs in the same cache: a hard link costs no second copy.
            os.link(os.path.realpath(src), dst)
        except OSError:
            shutil.copyfile(src, dst)

    return card.read_bytes(), fetch


def _fsspec(url: str):
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"{url}: URLs other than plain folders need fsspec: "
                         "pip install 'keras-embedding-zoo[hub]'") from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        raise ValueError(f"{url}: fsspec has no usable backend for this URL ({err})") from None
    return fs, path.rstrip("/")


def _protocols(fs) -> tuple:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)


def _fsspec_source(url: str):
    """(card.json bytes, fetch(relpath, dst)) of an fsspec URL: card.json first, then each file it lists."""
    fs, base = _fsspec(url)
    try:
        with _hub_errors(url):
            card = fs.cat_file(f"{base}/card.json")
    except FileNotFoundError:
        raise FileNotFoundError(f"{url}: no card.json there; not a zoo entry (push one with zoo push NAME URL)") \
            from None

    def fetch(relpath, dst: Path):
        try:
            with _hub_errors(url):
                fs.get_file(f"{base}/{relpath}", str(dst))
        except FileNotFoundError:
            raise FileNotFoundError(f"{url}: {relpath} is missing, though card.json lists it") from None

    return card, fetch


def pull(url: str, name: str | None = None, cache=None) -> Path:
    """Download the entry at `url` into the cache, every file checked against card.json; returns its folder.

    The folder appears (by rename) only once every file is there with its sha256; a refused or interrupted
    pull leaves nothing usable. Offline ($ZOO_OFFLINE / $HF_HUB_OFFLINE), the cache alone answers.

    Args:
        url: str. `hf://owner/repo[@revision]`, `file:///...`, `https://...`, `s3://...`, `gs://...`.
        name: str | None. the name to keep it under in the cache (default: the card's name).
        cache: str | Path | None. the cache (default: see `cache_dir`).
    """
    url = _canonical(url)
    root = cache_dir(cache)
    reason = offline_reason()
    if reason:
        folder = cached(url, root)
        if folder is not None and (name is None or folder.parent.name == name):
            return folder
        raise FileNotFoundError(f"{reason}: {url} is not in the cache {root}; pull it once with the network "
                                f"(zoo pull {url})")
    tmp_root = root / ".tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    _clean_stale(tmp_root)
    tmp = Path(tempfile.mkdtemp(prefix=f"pull-{socket.gethostname()}-{os.getpid()}-", dir=tmp_root))
    try:
        card_bytes, fetch = _hf_source(url, root) if url.startswith("hf://") else _fsspec_source(url)
        card = _parse_card(card_bytes, url)
        name = _check_name(name or card["name"], url)
        revision = hashlib.sha256(card_bytes).hexdigest()[:16]
        final = root / name / revision
        if not _complete(final):
            for relpath, expected in card["files"].items():
                dst = tmp / relpath
                dst.parent.mkdir(parents=True, exist_ok=True)
                fetch(relpath, dst)
                actual = _sha256_file(dst)
                if actual != expected:
                    raise ValueError(f"{url}: sha256 mismatch for {relpath}: expected {expected} (card.json), got "
                                     f"{actual}; the pull is refused and nothing was kept")
            (tmp / "card.json").write_bytes(card_bytes)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not _complete(final):  # else another pull of the same revision won the race
                    raise
        pulled = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_json(root / ".refs" / f"{_key(url)}.json",
                    {"url": url, "name": name, "revision": revision, "pulled": pulled})
        _write_json(root / name / ".latest", {"revision": revision, "url": url, "pulled": pulled})
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _entry_files(folder: Path) -> tuple[str, list[str]]:
    """(name, files) of a local entry: the card's list, each file checked against its sha256 before anything leaves."""
    card_path = folder / "card.json"
    if not card_path.is_file():
        raise FileNotFoundError(f"no card.json in {folder}: not a zoo entry")
    card = _parse_card(card_path.read_bytes(), str(folder))
    for relpath, expected in card["files"].items():
        path = folder / relpath
        if not path.is_file():
            raise FileNotFoundError(f"missing file of entry {card['name']!r}: {path} (listed in card.json)")
        if _sha256_file(path) != expected:
            raise ValueError(f"sha256 mismatch for {path}: the entry was modified; re-publish it before pushing")
    return card["name"], list(card["files"])


def push(folder, url: str, message: str | None = None) -> int:
    """Upload an entry folder (card.json and the files it lists, checked first) to a hub; returns the file count.

    hf:// creates the repository (and the revision's branch) when missing, then one `upload_folder` commit;
    fsspec URLs get every file, card.json last, into a folder that is empty or already a zoo entry (never over
    files the zoo did not write). http(s) is read-only.

    Args:
        folder: str | Path. the entry folder.
        url: str. `hf://owner/repo[@revision]`, `file:///...`, `s3://...`, `gs://...`.
        message: str | None. the commit message on hf:// (default: "zoo push <name>").
    """
    folder = Path(folder)
    name, files = _entry_files(folder)
    url = url.strip()
    if url.startswith("hf://"):
        try:
            from huggingface_hub import HfApi
        except ImportError:
            raise ValueError(f"{url}: hf:// URLs need huggingface_hub: pip install 'keras-embedding-zoo[hub]'") \
                from None
        repo, revision = parse_hf(url)
        with _hub_errors(url):
            api = HfApi()
            api.create_repo(repo, repo_type="model", exist_ok=True)
            if revision != "main":
                api.create_branch(repo, branch=revision, repo_type="model", exist_ok=True)
            api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model", revision=revision,
                              allow_patterns=["card.json", *files], commit_message=message or f"zoo push {name}")
        return len(files) + 1
    fs, base = _fsspec(url)
    if any(p in _HTTP for p in _protocols(fs)):
        raise ValueError(f"{url}: http(s) is read-only here; push to hf://, file://, s3:// or gs://")
    with _hub_errors(url):
        _put(fs, base, folder, files, url)
    return len(files) + 1


def _put(fs, base: str, folder: Path, files: list, url: str) -> None:
    """Copy an entry's files to an fsspec folder, refusing one that holds files and no zoo card."""
    if fs.exists(base):
        if not fs.isdir(base):
            raise ValueError(f"{url}: a file is there, not a folder; refused")
        if fs.exists(f"{base}/card.json"):
            _parse_card(fs.cat_file(f"{base}/card.json"), url)  # a zoo entry's card, or refused
        elif fs.ls(base, detail=False):
            raise ValueError(f"{url}: the folder holds files and no card.json, so it is no zoo entry; "
                             "refused (push to an empty folder)")
    local = any(p in ("file", "local") for p in _protocols(fs))
    for relpath in [*files, "card.json"]:  # card.json last: a half-done push has no new card to pull
        dst = f"{base}/{relpath}"
        fs.makedirs(str(PurePosixPath(dst).parent), exist_ok=True)
        if local:
            # A local folder may be served while it is written: each file appears whole, by rename.
            fs.put_file(str(folder / relpath), dst + ".zoo-push.tmp")
            fs.mv(dst + ".zoo-push.tmp", dst)
        else:
            fs.put_file(str(folder / relpath), dst)
