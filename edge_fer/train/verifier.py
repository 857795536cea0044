"""Train the face verifier (`edge_fer.detect.verifier`) on crops mined by
`edge_fer.cascade_train.verifier_data`, and export it to ONNX.

    python -m edge_fer.train.verifier runs/verifier/data runs/verifier/model [--epochs 12]
    python -m edge_fer.train.verifier DATA1 DATA2 --out MODEL --init face_verify.onnx --lr 5e-4

One small CNN, two heads: face-or-not (binary cross-entropy on faces and non-faces) and the box
offsets onto the face (smooth L1 on faces and parts). The epoch kept is the one with the lowest
loss on `sel.npz` (training images held out by name); the checkpoint (safetensors) is written
every epoch and the run resumes from it. Output: `verifier.onnx` with its crop settings in the
ONNX metadata, `train.json` with the per-epoch figures.

Several data folders (`--out` then names the output) are trained on together, e.g. crops mined
behind each bundled cascade. `--init` starts from an exported verifier (fine-tuning): its
convolutions come with their batch norms folded in, so the batch norms start as identities
and keep those statistics (frozen) while the rest learns.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REG_WEIGHT = 2.0  # offsets are ~0.05-0.3 box sides: their loss is small next to the class loss
# web photos hold upright heads; cameras see them rolled: half the crops are turned by up to this
ROLL_DEG = 30.0


def build_model():
    from torch import nn

    def block(i: int, o: int) -> list:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(1, 16),
        nn.MaxPool2d(2),  # 16x16
        *block(16, 32),
        nn.MaxPool2d(2),  # 8x8
        *block(32, 64),
        nn.MaxPool2d(2),  # 4x4
        *block(64, 64),
        nn.Flatten(),
        nn.Linear(64 * 16, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, 4),
    )


def load_split(paths):
    """One split (e.g. train.npz) of one or several data folders' files, concatenated."""
    import torch

    from edge_fer.detect.verifier import normalize

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    ds = [np.load(p) for p in paths]
    x = torch.from_numpy(normalize(np.concatenate([d["x"] for d in ds])))
    y = torch.from_numpy(np.concatenate([d["y"] for d in ds]).astype(np.int64))
    return x, y, torch.from_numpy(np.concatenate([d["offsets"] for d in ds]))


def init_from_onnx(model, path: Path) -> None:
    """Load an exported verifier's weights into `model` (`build_model`). The export folded each
    batch norm into its convolution: the convolution takes the folded weights and the batch
    norm becomes the identity plus the folded bias (running mean 0, variance 1 - eps)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    from edge_fer.errors import UserError

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(f"init: {path} is not an ONNX verifier ({exc})") from None
    init = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    mods = list(model)
    tconv = [i for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]
    tlin = [m for m in mods if isinstance(m, nn.Linear)]
    if len(convs) != len(tconv) or len(gemms) != len(tlin):
        raise UserError(f"init: {path} does not have this verifier's layers")
    with torch.no_grad():
        for node, i in zip(convs, tconv):
            w, b = (torch.from_numpy(init[k].copy()) for k in node.input[1:3])
            conv, bn = mods[i], mods[i + 1]
            if conv.weight.shape != w.shape:
                raise UserError(f"init: {path} does not have this verifier's layers")
            conv.weight.copy_(w)
            bn.weight.fill_(1.0)
            bn.bias.copy_(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        for node, lin in zip(gemms, tlin):
            w, b = (torch.from_numpy(init[k].copy()) for k in node.input[1:3])
            if lin.weight.shape != w.shape:
                raise UserError(f"init: {path} does not have this verifier's layers")
            lin.weight.copy_(w)
            lin.bias.copy_(b)


def freeze_batch_norms(model) -> None:
    """Batch norms in eval mode: their running statistics stay as loaded."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def roll(x, off, max_deg: float, gen):
    """Turn half the crops (n, 1, s, s) about their centre by up to `max_deg` degrees, the face
    offsets (drow, dcol) with them; the size offset is unchanged."""
    import torch
    import torch.nn.functional as F

    n = len(x)
    ang = (torch.rand(n, generator=gen) * 2 - 1) * (max_deg * torch.pi / 180)
    ang = ang * (torch.rand(n, generator=gen) < 0.5)
    cos, sin = torch.cos(ang), torch.sin(ang)
    # affine_grid samples the input at R @ (x, y) of each output pixel: content at q moves to
    # R^T q, and so does the face centre (normalised coordinates scale alike on a square crop)
    theta = torch.stack(
        [torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    dc, dr = off[:, 1], off[:, 0]
    off = torch.stack([-sin * dc + cos * dr, cos * dc + sin * dr, off[:, 2]], 1)
    return x, off


def losses(out, y, off):
    import torch.nn.functional as F

    cls = y >= 0
    lc = (
        F.binary_cross_entropy_with_logits(out[cls, 0], y[cls].float())
        if cls.any()
        else out.sum() * 0
    )
    reg = y != 0
    lr = F.smooth_l1_loss(out[reg, 1:], off[reg], beta=0.05) if reg.any() else out.sum() * 0
    return lc, lr


def evaluate(model, x, y, off, batch: int = 2048) -> dict:
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(model(x[i : i + batch]))
    out = torch.cat(outs)
    lc, lr = losses(out, y, off)
    p = torch.sigmoid(out[:, 0])
    pos, neg = y == 1, y == 0
    reg = y != 0
    err = (out[reg, 1:] - off[reg]).abs().mean(0).tolist() if reg.any() else [0, 0, 0]
    return {
        "loss": float(lc + REG_WEIGHT * lr),
        "cls_loss": float(lc),
        "reg_loss": float(lr),
        "face_recall@0.5": float((p[pos] >= 0.5).float().mean()),
        "non_face_rejected@0.5": float((p[neg] < 0.5).float().mean()),
        "offset_mae_before": off[reg].abs().mean(0).tolist(),
        "offset_mae_after": err,
    }


def train(
    data,
    out: Path,
    epochs: int = 12,
    batch: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    threads: int | None = None,
    init: Path | None = None,
) -> dict:
    """data: a folder with train.npz and sel.npz, or a list of such folders (pooled)."""
    import torch

    from edge_fer.train.checkpoint import load_checkpoint, save_checkpoint

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    folders = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
    xt, yt, ot = load_split([d / "train.npz" for d in folders])
    xs, ys, os_ = load_split([d / "sel.npz" for d in folders])
    model = build_model()
    if init is not None:
        init_from_onnx(model, Path(init))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    ckpt, best_path = out / "last.safetensors", out / "best.safetensors"
    state = {"epoch": 0, "history": [], "best": None, "seed": seed, "epochs": epochs}
    if init is not None:  # the starting point, scored as epoch 0 (no local paths recorded)
        state["init"] = {"model": Path(init).name, "sel": evaluate(model, xs, ys, os_)}
    if ckpt.is_file():
        state = load_checkpoint(ckpt, model, opt)
        for _ in range(state["epoch"] * ((len(xt) + batch - 1) // batch)):
            sched.step()
        print(f"resumed after epoch {state['epoch']}", flush=True)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(state["epoch"]):
        torch.randperm(len(xt), generator=gen)
    for epoch in range(state["epoch"] + 1, epochs + 1):
        model.train()
        if init is not None:
            freeze_batch_norms(model)
        t0 = time.time()
        perm = torch.randperm(len(xt), generator=gen)
        tot = 0.0
        for k, i in enumerate(range(0, len(xt), batch)):
            idx = perm[i : i + batch]
            x, y, o = xt[idx].clone(), yt[idx], ot[idx].clone()
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            o[flip, 1] = -o[flip, 1]  # a mirrored crop's face moves the other way
            if ROLL_DEG:
                x, o = roll(x, o, ROLL_DEG, gen)
            x = x + 0.05 * torch.randn(x.shape, generator=gen)
            lc, lr_ = losses(model(x), y, o)
            loss = lc + REG_WEIGHT * lr_
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach())
            if k % 100 == 0:
                print(f"epoch {epoch} batch {k}: loss {tot / (k + 1):.4f}", flush=True)
        ev = evaluate(model, xs, ys, os_)
        ev.update(epoch=epoch, train_loss=tot / (k + 1), seconds=round(time.time() - t0, 1))
        state["history"].append(ev)
        state["epoch"] = epoch
        if state["best"] is None or ev["loss"] < state["history"][state["best"] - 1]["loss"]:
            state["best"] = epoch
            save_checkpoint(best_path, model, None, state)
        save_checkpoint(ckpt, model, opt, state)
        print(json.dumps(ev), flush=True)
    load_checkpoint(best_path, model, None)
    export_onnx(
        model,
        out / "verifier.onnx",
        {
            "epoch": state["best"],
            "seed": seed,
            "sel": state["history"][state["best"] - 1],
            **({"init": Path(init).name} if init is not None else {}),
        },
    )
    (out / "train.json").write_text(json.dumps(state, indent=2) + "\n")
    return state


def export_onnx(model, path: Path, info: dict) -> None:
    import onnx
    import torch

    from edge_fer.detect.verifier import CONTEXT, SIZE

    model.eval()
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        model,
        torch.zeros(1, 1, SIZE, SIZE),
        str(tmp),
        input_names=["crops"],
        output_names=["logit_offsets"],
        opset_version=17,
        dynamic_axes={"crops": {0: "n"}, "logit_offsets": {0: "n"}},
        dynamo=False,
    )
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key = "edge_fer_verifier"
    entry.value = json.dumps({"context": CONTEXT, "size": SIZE, **info})
    onnx.save(proto, str(path))
    tmp.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "data",
        nargs="+",
        help="folder(s) with train.npz and sel.npz (verifier_data's output); without --out the "
        "last one is the output folder",
    )
    ap.add_argument("--out", default=None, help="output folder (checkpoints, verifier.onnx, ...)")
    ap.add_argument(
        "--init", default=None, help="start from this exported verifier (ONNX): fine-tuning"
    )
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    folders = [Path(d) for d in args.data]
    if args.out is None:
        if len(folders) < 2:
            ap.error("give the output folder after the data folder, or --out")
        folders, out = folders[:-1], folders[-1]
    else:
        out = Path(args.out)
    for data in folders:
        for f in ("train.npz", "sel.npz"):
            if not (data / f).is_file():
                print(
                    f"verifier: error: {data / f} not found "
                    "(run edge_fer.cascade_train.verifier_data)",
                    file=sys.stderr,
                )
                return 2
    if args.init is not None and not Path(args.init).is_file():
        print(f"verifier: error: --init {args.init} not found", file=sys.stderr)
        return 2
    from edge_fer.errors import UserError

    try:
        train(folders, out, args.epochs, args.batch, args.lr, args.seed, args.threads, args.init)
    except UserError as exc:
        print(f"verifier: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
