"""Deployment targets for TensorRT engines, held as data: what each board or GPU can build.

`TARGETS[name]` is a plain dict (other tools read it: `edge-fer deploy`, jetson/ scripts):

    description          the boards it covers
    gpu_arch             GPU architecture
    compute_capability   (major, minor) of the GPU; None for a family of discrete GPUs
                         (`min_compute_capability` then bounds it)
    min_compute_capability  the oldest (major, minor) of such a family; None for a Jetson
    jetson               True for a Jetson module (JetPack, /etc/nv_tegra_release)
    fp16, int8           fast FP16 / INT8 kernels (TensorRT's platform_has_fast_fp16/int8)
    dla_cores            Deep Learning Accelerator cores (0: none)
    sparsity             2:4 structured-sparse tensor cores (Ampere and later)
    jetpack              JetPack releases that support the module, oldest first
    tensorrt             TensorRT release of each of those JetPacks (same order); for discrete
                         GPUs the releases edge-fer is checked against
    default_tensorrt     the release to write calibration-cache headers for when the device's
                         own is unknown (the newest JetPack's)

Precision names used everywhere (CLI, sidecar, engine names): PRECISIONS.
"""

from __future__ import annotations

from typing import Any

from edge_fer.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")

# 2:4 sparse tensor cores arrived with Ampere
SPARSITY_MIN_COMPUTE_CAPABILITY = (8, 0)

# (JetPack releases, the TensorRT release of each): what a module generation can run
_JETPACK_4 = (("4.6.4",), ("8.2.1",))
_JETPACK_5 = (("5.1.3",), ("8.5.2",))
_JETPACK_ORIN = (("5.1.3", "6.0", "6.1", "6.2"), ("8.5.2", "8.6.2", "10.3.0", "10.3.0"))
# discrete GPUs: the TensorRT releases edge-fer is checked against, and the default
_DISCRETE_TENSORRT = ("8.6.1", "10.3.0", "10.13.0", "11.0.0")
_DISCRETE_DEFAULT = "10.3.0"

# name: (description, GPU architecture, compute capability, INT8 kernels, DLA cores, JetPacks).
# Every Jetson has fast FP16; sparsity follows the compute capability.
# fmt: off
_JETSONS = {
    "nano": ("Jetson Nano (4 GB / 2 GB)", "Maxwell", (5, 3), False, 0, _JETPACK_4),
    "tx2": ("Jetson TX2 / TX2 NX", "Pascal", (6, 2), False, 0, _JETPACK_4),
    "xavier-nx": ("Jetson Xavier NX", "Volta", (7, 2), True, 2, _JETPACK_5),
    "xavier-agx": ("Jetson AGX Xavier", "Volta", (7, 2), True, 2, _JETPACK_5),
    "orin-nano": ("Jetson Orin Nano (4 GB / 8 GB, Super included)",
                  "Ampere", (8, 7), True, 0, _JETPACK_ORIN),
    "orin-nx": ("Jetson Orin NX 16 GB (the 8 GB module has one DLA core)",
                "Ampere", (8, 7), True, 2, _JETPACK_ORIN),
    "orin-agx": ("Jetson AGX Orin (32 GB / 64 GB)", "Ampere", (8, 7), True, 2, _JETPACK_ORIN),
}
# fmt: on
# name: description; Turing (7.5) or later, FP16 and INT8, no DLA
_DISCRETE = {
    "laptop-rtx": "laptop GeForce RTX (20, 30, 40, 50 series)",
    "desktop-rtx": "desktop / workstation RTX (20, 30, 40, 50 series, RTX A/Ada)",
}


def _jetson_row(
    description: str,
    gpu_arch: str,
    cc: tuple[int, int],
    int8: bool,
    dla_cores: int,
    releases: tuple[tuple[str, ...], tuple[str, ...]],
) -> dict[str, Any]:
    jetpack, tensorrt = releases
    return {
        "description": description,
        "gpu_arch": gpu_arch,
        "compute_capability": cc,
        "min_compute_capability": None,
        "jetson": True,
        "fp16": True,
        "int8": int8,
        "dla_cores": dla_cores,
        "sparsity": cc >= SPARSITY_MIN_COMPUTE_CAPABILITY,
        "jetpack": list(jetpack),
        "tensorrt": list(tensorrt),
        "default_tensorrt": tensorrt[-1],  # the newest JetPack's
    }


def _discrete_row(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "gpu_arch": "Turing or later",
        "compute_capability": None,
        "min_compute_capability": (7, 5),
        "jetson": False,
        "fp16": True,
        "int8": True,
        "dla_cores": 0,
        "sparsity": True,  # Ampere (8.0) and later only (not checked: Turing builds dense)
        "jetpack": [],
        "tensorrt": list(_DISCRETE_TENSORRT),
        "default_tensorrt": _DISCRETE_DEFAULT,
    }


TARGETS: dict[str, dict[str, Any]] = {
    **{name: _jetson_row(*row) for name, row in _JETSONS.items()},
    **{name: _discrete_row(desc) for name, desc in _DISCRETE.items()},
}


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str) -> dict[str, Any]:
    """The table row of `name` (case-insensitive, '_' = '-'); UserError naming the choices."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in TARGETS:
        raise UserError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[key]


def target_problem(
    name: str,
    precision: str = "fp32",
    dla_core: int | None = None,
    sparse: bool = False,
) -> str | None:
    """Why a build of `precision` (with `dla_core`, `sparse`) cannot run on target `name`, as
    one sentence, or None when it can. UserError for an unknown target or precision."""
    t = get_target(name)
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    desc = t["description"]
    if precision == "int8" and not t["int8"]:
        return f"{desc} ({t['gpu_arch']}) has no INT8 kernels: build fp16 for it"
    if precision == "fp16" and not t["fp16"]:
        return f"{desc} ({t['gpu_arch']}) has no fast FP16 kernels: build fp32 for it"
    if dla_core is not None:
        cores = int(t["dla_cores"])
        if cores == 0:
            return f"{desc} has no DLA (Deep Learning Accelerator): build without a DLA core"
        if not 0 <= dla_core < cores:
            return f"{desc} has {cores} DLA cores (0..{cores - 1}), not core {dla_core}"
        if precision == "fp32":
            return "DLA runs FP16 or INT8 only: choose --precision fp16 or int8 with a DLA core"
    if sparse and not t["sparsity"]:
        return f"{desc} ({t['gpu_arch']}) has no 2:4 sparse tensor cores (Ampere and later)"
    return None


def device_problem(
    name: str, compute_capability: str | None, jetson: bool, gpu: str | None = None
) -> str | None:
    """Why an engine for target `name` cannot be built here, on a GPU of `compute_capability`
    ("8.6"; None: unknown, not checked) named `gpu`, on a Jetson or not, as one sentence, or
    None. An engine runs only on the GPU that built it, so the target must be this device."""
    t = get_target(name)
    desc = t["description"]
    if jetson and not t["jetson"]:
        jetsons = ", ".join(k for k, v in TARGETS.items() if v["jetson"])
        return f"{desc} is a discrete GPU and this is a Jetson: choose its module ({jetsons})"
    try:
        have = tuple(int(x) for x in str(compute_capability).split("."))
    except ValueError:  # None or unreadable: pycuda was missing, nothing to compare
        return None
    here = (
        f"this GPU ({gpu}) is {compute_capability}" if gpu else f"this GPU is {compute_capability}"
    )
    want, least = t["compute_capability"], t.get("min_compute_capability")
    if want and have != tuple(want):
        return (
            f"{desc} is compute capability {want[0]}.{want[1]}, {here}: build the engine on the "
            "target itself"
        )
    if least and have < tuple(least):
        return (
            f"{desc} is compute capability {least[0]}.{least[1]} and up ({t['gpu_arch']}), "
            f"{here}: leave the target out"
        )
    return None


def check_target(
    name: str, precision: str = "fp32", dla_core: int | None = None, sparse: bool = False
) -> dict[str, Any]:
    """The row of `name`; UserError with the reason when the build cannot run there."""
    why = target_problem(name, precision, dla_core, sparse)
    if why:
        raise UserError(f"target {name}: {why}")
    return get_target(name)


__all__ = [
    "PRECISIONS",
    "SPARSITY_MIN_COMPUTE_CAPABILITY",
    "TARGETS",
    "check_target",
    "device_problem",
    "get_target",
    "target_names",
    "target_problem",
]
