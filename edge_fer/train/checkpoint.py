"""Checkpoints in safetensors: model weights, optimizer buffers, and JSON state in metadata.

No pickles: a checkpoint can be opened safely from anyone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load, load_file, safe_open, save

from edge_fer import fileio
from edge_fer.errors import UserError


def save_checkpoint(path: Path, model, optimizer=None, state: dict | None = None) -> None:
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if optimizer is not None:
        for i, st in enumerate(_opt_states(optimizer)):
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{i}.{k}"] = v.detach().contiguous().cpu()
    meta = {"edge_fer.state": json.dumps(state or {})}
    # through edge_fer.fileio: atomic (never half a checkpoint), no temporary file left behind
    # on any failure (a folder in the way, a full disk), a symlink keeps pointing at it
    fileio.write_bytes(path, save(tensors, metadata=meta))


def _opt_states(optimizer):
    params = [p for g in optimizer.param_groups for p in g["params"]]
    return [optimizer.state.get(p, {}) for p in params]


def _utf8_name(path: Path) -> bool:
    """safetensors opens a file by a UTF-8 name: a name with other bytes (surrogate-escaped
    on Linux) raised "Path ... is not valid UTF-8", reported as a bad checkpoint, so a run
    folder named so was written and never read back."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _state_from_bytes(path: Path) -> dict:
    # the safetensors layout: u64 little-endian header size, then the JSON header
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 2 <= n <= 100_000_000:
            raise ValueError("no safetensors header")
        header = json.loads(f.read(n))
    return json.loads((header.get("__metadata__") or {}).get("edge_fer.state", "{}"))


def read_state(path: Path) -> dict:
    try:
        if not _utf8_name(Path(path)):
            return _state_from_bytes(Path(path))
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {}).get("edge_fer.state", "{}"))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds on a bad file
        raise UserError(f"{path}: not an edge-fer checkpoint ({exc})") from None


def read_tensors(path: Path) -> dict:
    try:
        if not _utf8_name(Path(path)):
            return load(Path(path).read_bytes())
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - as above
        raise UserError(f"{path}: not a safetensors checkpoint ({exc})") from None


def model_part(tensors: dict) -> dict:
    """The model's tensors of a checkpoint's (state-dict names), without the optimizer's."""
    return {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}


def read_weights(path: Path) -> dict:
    return model_part(read_tensors(path))


def _mismatch(exc: RuntimeError) -> str:
    """torch's first reason, on one line: its first line only names the class ("Error(s) in
    loading state_dict for VGGFER:"); the next says which keys are missing or differ."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    why = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
    return why if len(why) <= 200 else why[:197] + "..."


def load_checkpoint(path: Path, model, optimizer=None) -> dict:
    tensors = read_tensors(path)
    sd = model_part(tensors)
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        raise UserError(
            f"{path}: weights do not fit this architecture ({_mismatch(exc)})"
        ) from None
    if optimizer is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            # buffers follow their parameter, as torch's own load_state_dict does: a run saved
            # on the CPU resumes on a GPU (and the other way round)
            st = {
                k.split(".", 2)[2]: v.to(p.device, p.dtype) if v.is_floating_point() else v
                for k, v in tensors.items()
                if k.startswith(f"optim.{i}.")
            }
            if st:
                optimizer.state[p] = st
    return read_state(path)
