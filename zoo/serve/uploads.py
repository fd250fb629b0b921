"""Uploaded files and support zips of a `zoo serve` request: written to a temporary folder that is deleted
afterwards, read within the limits, decoded one at a time."""

import io
import json
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from . import limits
from .guards import _shown


class Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message



def _safe_name(filename, fallback) -> str:
    """A file name reduced to its last component, printable, at most limits.MAX_NAME_CHARS characters (its suffix
    kept): uploads never choose where they are written, nor how long a name the file system must take."""
    name = PurePosixPath(str(filename or "").replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable())
    if name in ("", ".", ".."):
        return fallback
    if len(name) > limits.MAX_NAME_CHARS:
        suffix = PurePosixPath(name).suffix[:10]
        name = name[: limits.MAX_NAME_CHARS - len(suffix) - 3] + "..." + suffix
    return name


def _support_labels(labels, count) -> list:
    """The `labels` field of a classify request: a JSON list of `count` class names (non-empty strings)."""
    try:
        value = json.loads(labels or "")
    except (json.JSONDecodeError, RecursionError):
        value = None
    if not (isinstance(value, list) and len(value) == count
            and all(isinstance(v, str) and v.strip() and len(v) <= limits.MAX_LABEL_CHARS for v in value)):
        raise Refused(400, f"labels must be a JSON list of {count} class names (strings of 1 to "
                           f"{limits.MAX_LABEL_CHARS} characters), one per support file; got {_shown(labels)!r}")
    return value


_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


class Uploads:
    """Uploaded files written to a temporary folder that is deleted on exit, decoded one at a time.

    Args:
        zoo: Zoo. decodes within its budget.
        embedder: OnnxEmbedder. whose contract the files are prepared by.
        max_files: int. images in one request.
    """

    def __init__(self, zoo, embedder, max_files=limits.MAX_FILES):
        self.zoo, self.embedder, self.max_files, self.count = zoo, embedder, max_files, 0

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="zoo-serve-")
        self.folder = Path(self._tmp.name)
        return self

    def __exit__(self, *exc):
        self._tmp.cleanup()

    def _counted(self):
        self.count += 1
        if self.count > self.max_files:
            raise Refused(413, f"more than {self.max_files} files in one request; send fewer")

    def files(self, uploads) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
        """(names, model inputs (N, H, W, C), thumbnails) of UploadFiles; a file that is not an image is a 400
        naming it."""
        names, inputs, thumbnails = [], [], []
        for i, upload in enumerate(uploads):
            self._counted()
            name = _safe_name(upload.filename, f"upload-{i}")
            path = self.folder / f"{self.count:04d}-{name}"
            path.write_bytes(upload.file.read())
            x, thumbnail = self.zoo.decode(self.embedder, path, name)
            path.unlink()
            names.append(name)
            inputs.append(x)
            thumbnails.append(thumbnail)
        return names, np.stack(inputs), thumbnails

    def zipped_classes(self, upload) -> tuple[list[str], list[str], np.ndarray, list[np.ndarray]]:
        """(classes, names, model inputs, thumbnails) from a zip of class folders: <class>/<image> (any depth
        above <class>), members read as streams within MAX_ZIP_* limits, never written to disk."""
        from zoo.runtime.files import IMAGE_SUFFIXES

        try:
            archive = zipfile.ZipFile(io.BytesIO(upload.file.read()))
            members = archive.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError):
            raise Refused(400, f"{_safe_name(upload.filename, 'the zip')}: not a zip file that can be read") \
                from None
        if len(members) > limits.MAX_ZIP_MEMBERS:
            raise Refused(413, f"the zip lists {len(members)} members, more than {limits.MAX_ZIP_MEMBERS}")
        labels, names, inputs, thumbnails, total = [], [], [], [], 0
        for member in members:
            parts = PurePosixPath(member.filename).parts
            if member.is_dir() or len(parts) < 2 or PurePosixPath(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            shown = _shown(member.filename)
            if len(parts[-2]) > limits.MAX_LABEL_CHARS:
                raise Refused(400, f"{shown}: a class folder name longer than {limits.MAX_LABEL_CHARS} characters")
            self._counted()
            data = self._read_member(archive, member, shown, limits.MAX_ZIP_TOTAL_BYTES - total)
            total += len(data)
            name = f"{parts[-2]}/{_safe_name(parts[-1], 'image')}"
            x, thumbnail = self.zoo.decode(self.embedder, name, name, data=data)
            labels.append(parts[-2])
            names.append(name)
            inputs.append(x)
            thumbnails.append(thumbnail)
        if not inputs:
            raise Refused(400, "the zip holds no images in class folders (expected <class>/<image>.png ...)")
        return labels, names, np.stack(inputs), thumbnails

    @staticmethod
    def _read_member(archive, member, shown, budget) -> bytes:
        """A member's bytes as they decompress, refused as soon as they pass a limit."""
        if member.flag_bits & 0x1:
            raise Refused(400, f"{shown}: encrypted; send a zip without a password")
        if member.compress_type not in _ZIP_METHODS:
            raise Refused(400, f"{shown}: compression method {member.compress_type} is not one of stored, "
                                "deflate, bzip2, lzma")
        limit = min(limits.MAX_ZIP_MEMBER_BYTES, budget)
        chunks, size = [], 0
        try:
            with archive.open(member) as stream:
                while chunk := stream.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise Refused(413, f"{shown}: expands past {limit // 2**20} MB (a member may hold "
                                            f"{limits.MAX_ZIP_MEMBER_BYTES // 2**20} MB, the zip "
                                            f"{limits.MAX_ZIP_TOTAL_BYTES // 2**20} MB)")
                    if size > 2**20 and size > limits.MAX_ZIP_RATIO * max(member.compress_size, 1):
                        raise Refused(413, f"{shown}: expands more than {limits.MAX_ZIP_RATIO} times; "
                                           "not an image file")
                    chunks.append(chunk)
        except Refused:
            raise
        except Exception as err:  # BadZipFile (a bad CRC), zlib.error, lzma.LZMAError, EOFError: a corrupt member
            raise Refused(400, f"{shown}: damaged in the zip ({type(err).__name__})") from None
        return b"".join(chunks)
