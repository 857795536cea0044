"""What machine this is: for benchmark reports, and for the bundled model's precision."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """/proc/cpuinfo once per process ("" where there is none: another OS)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _first(cpuinfo: str, *keys: str) -> str | None:
    """The value of the first line of /proc/cpuinfo text whose key is one of `keys`."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what the platform module knows, with the
    microarchitecture LLVM compiles the detector for: a VM's model name can be as bare as
    "AMD EPYC", which named both a Zen 1 without VNNI and a Zen 4 with it (timings 2-3x apart)."""
    name = _first(_cpuinfo(), "model name") or platform.processor() or platform.machine()
    try:
        # numba's compiler, installed with edge-fer (no type stubs)
        import llvmlite.binding as llvm  # type: ignore[import-untyped]

        arch = llvm.get_host_cpu_name()
    except Exception:  # noqa: BLE001 - optional detail; any failure leaves the name alone
        arch = ""
    return f"{name} ({arch})" if arch and arch not in ("generic", name) else name


# x86 flags (Linux /proc/cpuinfo) of an int8 dot product that does not saturate: AVX-512 VNNI
# (Cascade Lake and later Xeons, Ice Lake, Zen 4), AVX-VNNI (Alder Lake and later), AMX.
_VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of the first processor in /proc/cpuinfo (x86 `flags`, ARM
    `Features`); empty when they cannot be read (another OS)."""
    value = _first(_cpuinfo() if cpuinfo is None else cpuinfo, "flags", "Features")
    return set(value.split()) if value else set()


def x86_without_vnni(cpuinfo: str | None = None, machine: str | None = None) -> bool:
    """True on an x86 CPU whose flags are known and name no VNNI-class int8 instruction. There
    ONNX Runtime's int8 convolutions either saturate or, made exact, ran no faster than FP32
    (docs/quantize.md); False where unknown (other OSes, ARM)."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "i386"):
        return False
    flags = cpu_flags(cpuinfo)
    return bool(flags) and not flags & _VNNI_FLAGS
