"""Writes that never destroy: the zoo replaces only a folder or file it wrote itself, and atomically.

    write_folder(dest, fill, own_files, what="a gallery index", overwrite=False)   # check_folder: the same, first
    write_file(dest, write, overwrite=False)                                        # check_file

`write_folder` lets `fill(tmp)` write every file into a new hidden folder beside `dest`, then renames it into
place: onto nothing, onto an empty folder, or onto a folder of the writer's own. That one is recognised by its
manifest (`own_files(folder)` returns the relative paths the manifest lists, or raises) and must hold nothing
else; it is renamed aside to a unique hidden name (put back if the second rename fails), and only the files
found there, all of them its own, and their folders are removed. Anything else at `dest` is refused with one
line naming it (FileExistsError), before `fill` runs and again just before the swap. No temporary folder
stays behind on any failure. Standard library only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import warnings
from pathlib import Path

__all__ = ["write_folder", "check_folder", "write_file", "check_file", "stray_entry"]


def _unique(dest: Path, kind: str) -> Path:
    """A hidden name beside `dest` that nothing has: .NAME-KIND-xxxxxxxx."""
    return dest.with_name(f".{dest.name}-{kind}-{secrets.token_hex(4)}")


def _entries(folder: Path, rel: str = ""):
    """(relative POSIX path, is a real folder) of everything under `folder`, parents before children."""
    for entry in sorted(os.scandir(folder / rel if rel else folder), key=lambda e: e.name):
        name = f"{rel}/{entry.name}" if rel else entry.name
        is_dir = entry.is_dir(follow_symlinks=False)
        yield name, is_dir
        if is_dir:
            yield from _entries(folder, name)


def stray_entry(folder, files) -> str | None:
    """The first file, symlink or other non-folder under `folder` that is not one of `files`, else None
    (folders are not strays: one that holds only empty folders loses nothing when removed).

    Args:
        folder: str | Path. an existing folder.
        files: iterable of str. relative POSIX paths of the files that belong there.
    """
    files = set(files)
    return next((name for name, is_dir in _entries(Path(folder)) if not is_dir and name not in files), None)


def check_folder(dest, own_files, *, what: str, overwrite: bool = True) -> list | None:
    """Raise FileExistsError naming `dest` where `write_folder` would refuse it (check before the work).

    Returns what stands there: None (nothing), [] (an empty folder) or the relative paths of everything in the
    writer's own folder, children before parents.

    Args:
        dest: str | Path. the folder to write.
        own_files: callable. see `write_folder`.
        what: str. see `write_folder`.
        overwrite: bool. see `write_folder`.
    """
    dest = Path(dest)
    if not os.path.lexists(dest):
        return None
    if dest.is_symlink():
        raise FileExistsError(f"{dest}: is a symlink; refusing to replace it with {what} (give another path)")
    if not dest.is_dir():
        raise FileExistsError(f"{dest}: exists and is not a folder; refusing to replace it with {what}")
    if not any(os.scandir(dest)):
        return []
    stray = stray_entry(dest, own_files(dest))  # own_files raises where no manifest of the writer is there
    if stray:
        raise FileExistsError(f"{dest}: holds {stray}, which is not part of {what}; refusing to replace the "
                              "folder (move it out, or choose another path)")
    if not overwrite:
        raise FileExistsError(f"{dest}: {what} is already there; pass --overwrite (overwrite=True) to replace it")
    return [name for name, _ in _entries(dest)][::-1]


def write_folder(dest, fill, own_files, *, what: str, overwrite: bool = True):
    """Write the folder `dest` atomically, replacing only a folder of the writer's own; returns fill's result.

    Args:
        dest: str | Path. the folder to write.
        fill: callable. fill(tmp: Path) writes every file into tmp, a new hidden folder beside dest.
        own_files: callable. own_files(folder: Path) -> iterable of str: the relative POSIX paths the writer's
            manifest in an existing, non-empty folder lists; raises FileExistsError naming the folder when
            there is no such manifest.
        what: str. what the folder holds, for the messages, e.g. "a gallery index".
        overwrite: bool. replace a folder of the writer's own (False: refused, naming --overwrite).
    """
    dest = Path(dest)
    check_folder(dest, own_files, what=what, overwrite=overwrite)  # refuse before the work, not after it
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique(dest, "new")
    tmp.mkdir()  # the umask's mode, as the folder written in place would have
    try:
        result = fill(tmp)
        # Again: the folder may have changed while fill ran.
        old_entries = check_folder(dest, own_files, what=what, overwrite=overwrite)
        if not old_entries:
            # rename(2) onto nothing or onto an empty folder; a folder that got files meanwhile fails it.
            os.replace(tmp, dest)
            return result
        old = _unique(dest, "old")
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old, dest)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for name in old_entries:  # only what was checked to be the writer's own; children before parents
        path = old / name
        try:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()
            else:
                path.unlink()
        except OSError:
            pass
    try:
        old.rmdir()
    except OSError:  # something was added to the old folder while it was replaced: keep it
        warnings.warn(f"{old}: the replaced {dest.name} was kept there, it holds files added meanwhile",
                      stacklevel=2)
    return result


def check_file(dest, *, overwrite: bool = False) -> None:
    """Raise FileExistsError naming `dest` where `write_file` would refuse it (check before the work).

    Args:
        dest: str | Path. the file to write.
        overwrite: bool. see `write_file`.
    """
    dest = Path(dest)
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"{dest.parent}: no such folder (to write {dest.name} into)")
    if os.path.lexists(dest):
        if dest.is_symlink() or not dest.is_file():
            raise FileExistsError(f"{dest}: exists and is not a regular file; refusing to replace it")
        if not overwrite:
            raise FileExistsError(f"{dest}: exists; pass --overwrite (overwrite=True) to replace it")


def write_file(dest, write, *, overwrite: bool = False) -> Path:
    """Write one file atomically through a unique temporary file beside it; an existing file is replaced only
    with `overwrite`, anything else at `dest` never.

    Args:
        dest: str | Path. the file to write.
        write: callable. write(f) writes the content into the binary file object f.
        overwrite: bool. replace an existing regular file (False: refused, naming --overwrite).
    """
    dest = Path(dest)
    check_file(dest, overwrite=overwrite)
    tmp = _unique(dest, "tmp")
    try:
        with open(tmp, "xb") as f:  # a new file (never one that is there), with the umask's mode
            write(f)
        check_file(dest, overwrite=overwrite)
        if overwrite:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)  # fails if a file appeared at dest meanwhile, where a rename would replace it
            except FileExistsError:
                raise FileExistsError(f"{dest}: exists; pass --overwrite (overwrite=True) to replace it") from None
            except OSError:  # a filesystem without hard links
                os.replace(tmp, dest)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return dest
