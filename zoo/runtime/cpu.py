"""The CPU this process runs on, as far as int8 answers depend on it: its flags and its int8 class."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["INT8_KERNEL_FEATURES", "RECORDED_FEATURES", "cpu_features", "int8_cpu_class"]

# CPU flags that decide which int8 kernels onnxruntime's MLAS runs, so whether int8 answers can differ:
# x86 AVX2 / AVX-512BW multiply-add uint8 x int8 with saturation, the VNNI and AMX ones do not; Arm has
# its own dot-product and matrix-multiply instructions.
INT8_KERNEL_FEATURES = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm", "sve")
# What a card records of the CPU that measured int8 (the kernel flags and their neighbours).
RECORDED_FEATURES = ("sse4_1", "avx", "fma", "avx512f", "asimd", *INT8_KERNEL_FEATURES)


def cpu_features() -> dict:
    """This machine's processor as the OS reports it: {"machine", "model", "flags"}.

    Linux reads /proc/cpuinfo (x86 "flags", Arm "Features"); elsewhere the flags are unknown (empty),
    so an int8 graph is always checked against fp32 at load there.
    """
    model, flags = platform.processor() or "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "model name" and value.strip():
            model = value.strip()
    return {"machine": platform.machine().lower(), "model": model,
            "flags": sorted(f for f in flags if f in RECORDED_FEATURES)}


def int8_cpu_class(features=None) -> str:
    """The CPU class whose int8 answers are alike: machine and int8 kernel flags, e.g. "x86_64:avx2".

    Args:
        features: dict | None. `cpu_features()` output (default: this machine's).
    """
    features = cpu_features() if features is None else features
    flags = [f for f in features.get("flags", []) if f in INT8_KERNEL_FEATURES]
    return f"{features.get('machine', '?')}:{'+'.join(sorted(flags)) or 'none'}"
