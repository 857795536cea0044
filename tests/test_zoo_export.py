"""Every zoo architecture exports to a plain ONNX graph (no control flow) that ONNX Runtime runs
with the torch model's outputs: an `If` or `Loop` node is refused by the INT8 quantizer and by
TensorRT's parser (cnn8_tanh's LocalResponseNorm exported one)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edge_fer.models.registry import _REGISTRY, _load_zoo, default_input_size

_load_zoo()


# "pruned" is made by `edge-fer prune` from another architecture
@pytest.mark.parametrize("arch", sorted(set(_REGISTRY) - {"pruned"}))
def test_zoo_exports_without_control_flow(arch, tmp_path) -> None:
    import onnxruntime as ort

    from edge_fer.export.onnx import _export, probs_module
    from edge_fer.models import create_model

    torch.manual_seed(0)
    size = default_input_size(arch)
    net = probs_module(create_model(arch, num_classes=7, in_channels=1)).eval()
    path = tmp_path / f"{arch}.onnx"
    _export(torch, net, torch.zeros(1, 1, size, size), path, 17, "auto")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"If", "Loop", "Scan"}, ops
    x = np.random.default_rng(0).standard_normal((2, 1, size, size)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("arch", sorted(set(_REGISTRY) - {"pruned"}))
def test_a_fresh_zoo_model_tells_faces_apart(arch) -> None:
    """At initialisation, in training mode (what the optimiser sees), the signal must reach the
    logits: a net whose logits are the same for every face trains into the majority class
    (cnn8_tanh did with torch's default init: logits std 2e-6 across faces)."""
    from edge_fer.models import create_model

    torch.manual_seed(0)
    size = default_input_size(arch)
    net = create_model(arch, num_classes=7, in_channels=1).train()
    with torch.no_grad():
        logits = net(torch.randn(32, 1, size, size))
    assert float(logits.std(0).mean()) > 0.05, arch


@pytest.mark.parametrize(
    "arch, kwargs",
    [("mini_xception", {}), ("mobilenet", {}), ("vgg", {"depths": [2, 2, 3, 3]})],
)
def test_an_exported_model_is_rebuilt_in_torch(arch, kwargs, tmp_path) -> None:
    """`prune`/`qat --model X.onnx` rebuild the torch model from the graph. mini_xception's
    blocks define their shortcut before their main path, and the weights were matched in the
    module tree's order: "conv weight ... is (8, 1, 3, 3), the layer expects (16, 8, 1, 1)".
    Architecture options travel in the metadata: a deeper vgg is rebuilt deeper."""
    import cv2

    from edge_fer.export.onnx import export_checkpoint
    from edge_fer.export.onnx_import import torch_model_from_onnx
    from edge_fer.models import create_model
    from edge_fer.train.trainer import TrainConfig, train

    rng = np.random.default_rng(0)
    data = tmp_path / "faces"
    for cls in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"):
        (data / cls).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(data / cls / f"f{i}.png"), rng.integers(0, 255, (48, 48), np.uint8))
    run = tmp_path / "run"
    train(TrainConfig(arch=arch, data=str(data), out=str(run), epochs=1, batch_size=8,
                      threads=1, max_batches=1, precise_bn=0, arch_kwargs=kwargs))  # fmt: skip
    export_checkpoint(run / "best.safetensors", tmp_path / "m.onnx", check=False)
    model, spec, meta = torch_model_from_onnx(tmp_path / "m.onnx")  # checks parity itself
    assert meta["edge_fer.arch"] == arch and spec.input_size == 48
    want = create_model(arch, num_classes=7, in_channels=1, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in want.parameters())


def test_vgg_depths_default_is_the_bundled_layout() -> None:
    """`depths` must leave the default vgg's layers (and so the bundled weights' names) as
    they were; [2, 2, 3, 3] adds a conv to each of the two last stages."""
    from edge_fer.models import create_model

    plain = create_model("vgg", num_classes=7, in_channels=1)
    same = create_model("vgg", num_classes=7, in_channels=1, depths=[2, 2, 2, 2])
    deep = create_model("vgg", num_classes=7, in_channels=1, depths=[2, 2, 3, 3])
    assert list(plain.state_dict()) == list(same.state_dict())
    convs = [m for m in deep.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128, 128, 256, 256, 256]
    assert sum(p.numel() for p in deep.parameters()) == 1_912_487
