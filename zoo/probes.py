"""Hostile inputs for checking a deployment of `zoo serve`, and a server process watched for its memory.

    from zoo.probes import ServerProcess, gif_screen, zip_bomb
    with ServerProcess(["--galleries", "G"]) as server:
        server.reset_peak()
        httpx.post(server.url + "/api/search", data={"entry": "protonet"},
                   files={"query": ("q.gif", gif_screen(13000))})
        server.peak_rss(), server.rss()

The files are small on the wire and large once decoded or unpacked: a GIF whose logical screen is far larger
than its one frame, a flat PNG (deflate packs 169 Mpx of one grey into 164 KB), zips whose members expand to
gigabytes, and zips with a damaged CRC, the encrypted flag or an unknown compression method. They reproduce,
at any size, the uploads that `tests/test_security_server.py` refuses and `benchmarks/hostile_uploads.py`
measures before and after the fix.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib

import numpy as np

__all__ = ["gif_screen", "flat_png", "png", "zip_bomb", "zip_patched", "ServerProcess", "free_port"]


def gif_screen(side: int) -> bytes:
    """A GIF of one 1x1 frame on a side x side logical screen (35 bytes): decoders allocate the
    screen."""
    head = b"GIF89a" + struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return head + frame + b";"


def png(image) -> bytes:
    """uint8 (H, W) or (H, W, C) pixels as PNG bytes."""
    from PIL import Image

    x = np.asarray(image, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x).save(buffer, "PNG")
    return buffer.getvalue()


def flat_png(width: int, height: int, mode: str = "L", value: int = 128) -> bytes:
    """A PNG of one flat colour: a few hundred bytes a megapixel on the wire, width x height once decoded."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), value if mode == "L" else (value,) * len(mode)).save(buffer, "PNG")
    return buffer.getvalue()


def zip_bomb(members) -> bytes:
    """A zip whose members are `head` bytes followed by `zeros` zero bytes, deflated, written as a stream.

    Args:
        members: iterable of (name, head bytes, zeros int).
    """
    buffer = io.BytesIO()
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, head, zeros in members:
            with archive.open(name, "w", force_zip64=zeros > 2**31) as stream:
                stream.write(head)
                for start in range(0, zeros, len(chunk)):
                    stream.write(chunk[: min(len(chunk), zeros - start)])
    return buffer.getvalue()


def zip_patched(name: str, data: bytes, *, bad_crc=False, encrypted=False, method=None) -> bytes:
    """A zip of one stored member, then damaged: a flipped payload byte (its CRC no longer matches), the
    encrypted flag set, or another compression method number written in both of its headers."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(name, data)
    raw = bytearray(buffer.getvalue())
    local, central = raw.index(b"PK\x03\x04"), raw.index(b"PK\x01\x02")
    if bad_crc:
        payload = local + 30 + len(name.encode())
        raw[payload + len(data) // 2] ^= 0xFF
    if encrypted:
        raw[local + 6] |= 0x01
        raw[central + 8] |= 0x01
    if method is not None:
        raw[local + 8 : local + 10] = struct.pack("<H", method)
        raw[central + 10 : central + 12] = struct.pack("<H", method)
    return bytes(raw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class ServerProcess:
    """`zoo serve` in a subprocess on a free loopback port, with its resident memory read from /proc (Linux).

    A watcher kills the server when its resident set passes `kill_above_mb`, so a bomb that is not refused
    stops at a known size instead of taking the machine; `killed` then says when.

    Args:
        args: list of str. arguments after `zoo serve --port P` (e.g. ["--galleries", DIR]).
        cwd: str | None. the checkout to run (its `zoo` is imported: PYTHONPATH is set to it).
        env: dict | None. extra environment variables.
        settings: dict | None. constants of zoo.serve.limits set before it serves (e.g. {"HEADER_TIMEOUT_S": 1}).
        kill_above_mb: float. the watcher's limit.
        python: str. the interpreter.
    """

    def __init__(self, args=(), *, cwd=None, env=None, settings=None, kill_above_mb=4096.0, python=sys.executable):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = ("import sys, zoo.serve.limits as s\n"
                f"for k, v in {dict(settings or {})!r}.items(): setattr(s, k, v)\n"
                "from zoo.cli import main\nsys.exit(main(sys.argv[1:]))")
        self._cmd = [python, "-c", code, "serve", "--port", str(self.port), *map(str, args)]
        self._env = {**os.environ, **(env or {})}
        if cwd:
            self._env["PYTHONPATH"] = str(cwd)
        self._cwd, self.kill_above_mb, self.killed = cwd, kill_above_mb, None

    def __enter__(self):
        import httpx

        self.process = subprocess.Popen(self._cmd, cwd=self._cwd, env=self._env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"zoo serve exited: {self.process.stdout.read().decode(errors='replace')}")
            try:
                if httpx.get(self.url + "/api/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            self.__exit__()
            raise RuntimeError("zoo serve did not answer within 120 s")
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.02):
            try:
                rss = _status_kb(self.process.pid, "VmRSS") / 1024
            except (OSError, KeyError):
                return
            if rss > self.kill_above_mb:
                self.killed = {"rss_mb": round(rss), "after_s": round(time.monotonic() - self._started, 1)}
                os.killpg(self.process.pid, signal.SIGKILL)
                return

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss(self) -> float:
        """Resident memory now, MB."""
        return _status_kb(self.process.pid, "VmRSS") / 1024

    def peak_rss(self) -> float:
        """Peak resident memory since start or the last `reset_peak`, MB (the kernel's VmHWM)."""
        return _status_kb(self.process.pid, "VmHWM") / 1024

    def reset_peak(self) -> None:
        """Start a new peak (writes 5 to /proc/PID/clear_refs); `overall_peak_rss` still counts the old one."""
        self._earlier_peak = self.overall_peak_rss()
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as f:
            f.write("5")

    def overall_peak_rss(self) -> float:
        """Peak resident memory since start, across resets, MB."""
        return max(getattr(self, "_earlier_peak", 0.0), self.peak_rss())

    def output(self) -> str:
        """What the server printed (after it stopped)."""
        return self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""

    def __exit__(self, *exc):
        if getattr(self, "_stop", None):
            self._stop.set()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _self_check():
    """Each probe is what it claims (run as `python -m zoo.probes`)."""
    from PIL import Image

    assert len(gif_screen(13000)) < 40
    assert Image.open(io.BytesIO(gif_screen(13000))).size == (13000, 13000)
    bomb = zip_bomb([("cls/x.png", b"", 10 << 20)])
    assert zipfile.ZipFile(io.BytesIO(bomb)).infolist()[0].file_size == 10 << 20 and len(bomb) < 20_000
    data = png(np.zeros((4, 4), np.uint8))
    for damage in ({"bad_crc": True}, {"encrypted": True}, {"method": 99}):
        member = zipfile.ZipFile(io.BytesIO(zip_patched("a/b.png", data, **damage))).infolist()[0]
        assert member.flag_bits & 1 if damage.get("encrypted") else True
    try:
        zipfile.ZipFile(io.BytesIO(zip_patched("a/b.png", data, bad_crc=True))).read("a/b.png")
        raise AssertionError("the CRC was not damaged")
    except zipfile.BadZipFile:
        pass
    assert zlib.crc32(data) == zipfile.ZipFile(io.BytesIO(zip_patched("a/b.png", data))).infolist()[0].CRC
    print("zoo.probes: ok")


if __name__ == "__main__":
    _self_check()
