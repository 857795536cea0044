"""The architectures of the FER research this project comes from, sized for edge devices."""

from __future__ import annotations

import math

import torch
from torch import nn

from edge_fer.models.registry import register_model


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Head(nn.Sequential):
    """Global average pool, dropout, linear."""

    def __init__(self, cin: int, num_classes: int, dropout: float = 0.3):
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes)
        )


class FeaturesHead(nn.Module):
    """A feature stack (`features`) then a `Head`: the shape of most of the zoo."""

    def forward(self, x):
        return self.head(self.features(x))


@register_model("cnn4", input_size=48)
class SmallCNN(nn.Module):
    """The small 4-conv CNN: 16-32-64-64 filters, a 256-unit dense layer (36x36 or 48x48)."""

    def __init__(self, num_classes=7, in_channels=1, input_size=48, dropout=0.5):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(in_channels, 16, 5),
            nn.MaxPool2d(2),
            conv_bn(16, 32, 3),
            nn.MaxPool2d(2),
            conv_bn(32, 64, 3),
            conv_bn(64, 64, 3),
            nn.MaxPool2d(2),
        )
        side = input_size // 8
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


TANH_HALF_GAIN = 2 * 5 / 3  # init gain for tanh(x/2): tanh's 5/3 over its slope at 0, 1/2


class HalfTanh(nn.Module):
    """tanh(x/2), the activation of the 8-conv network."""

    def forward(self, x):
        return torch.tanh(0.5 * x)


class LRN(nn.Module):
    """Local response normalisation across channels (as nn.LocalResponseNorm) for 4-D inputs,
    written without the branches on the input rank that torch's version has: those export as an
    ONNX `If`, which the INT8 quantizer and TensorRT's parser refuse."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        sq = (x * x).unsqueeze(1)  # (N, 1, C, H, W): pool over the channel axis
        sq = nn.functional.pad(sq, (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
        div = nn.functional.avg_pool3d(sq, (self.size, 1, 1), stride=1)[:, 0]
        return x / (self.k + self.alpha * div).pow(self.beta)


@register_model("cnn8_tanh", input_size=48)
class TanhCNN8(FeaturesHead):
    """8 convolutions with tanh(x/2) activations, local response normalisation, 3 max-pools."""

    def __init__(self, num_classes=7, in_channels=1, width=32, dropout=0.4):
        super().__init__()
        w = width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), HalfTanh()]

        self.features = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            LRN(5),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            *block(2 * w, 2 * w),
            LRN(5),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            *block(4 * w, 4 * w),
            *block(4 * w, 4 * w),
            LRN(5),
            nn.MaxPool2d(2),
        )
        self.head = Head(4 * w, num_classes, dropout)
        # torch's default conv init (variance 1/(3 fan_in)) with tanh(x/2)'s slope of 1/2 shrinks
        # the signal about 3x a layer: after 8 the logits were the same for every face (std
        # 1e-6) and training never left the majority class. Tanh's gain (5/3) doubled for the
        # halved slope keeps each layer's activations at a std of 0.6-0.75 on unit inputs.
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, TANH_HALF_GAIN / math.sqrt(m.weight[0].numel()))
                nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


@register_model("resnet", input_size=48)
class ResNetFER(FeaturesHead):
    """ResNet-style: a 3x3 stem and four stages of basic blocks (~2.6M parameters at width 32)."""

    def __init__(self, num_classes=7, in_channels=1, width=32, blocks=(2, 2, 2, 2), dropout=0.3):
        super().__init__()
        w = width
        layers: list[nn.Module] = [conv_bn(in_channels, w, 3)]
        cin = w
        for i, n in enumerate(blocks):
            cout = w * 2**i
            for j in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.head = Head(cin, num_classes, dropout)


class DWSep(nn.Sequential):
    def __init__(self, cin, cout, stride):
        super().__init__(conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, cout, 1))


@register_model("mobilenet", input_size=48)
class MobileNetFER(FeaturesHead):
    """MobileNet(v1)-style depthwise-separable network with a width multiplier `alpha`."""

    # (out channels, stride) at alpha = 1
    CFG = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (1024, 2))

    def __init__(self, num_classes=7, in_channels=1, alpha=0.5, dropout=0.3):
        super().__init__()
        c = max(8, int(32 * alpha))
        layers: list[nn.Module] = [conv_bn(in_channels, c, 3, 1)]
        for cout, s in self.CFG:
            cout = max(8, int(cout * alpha))
            layers.append(DWSep(c, cout, s))
            c = cout
        self.features = nn.Sequential(*layers)
        self.head = Head(c, num_classes, dropout)


class XceptionModule(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.residual = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, groups=cout, bias=False),
            nn.Conv2d(cout, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.MaxPool2d(3, 2, 1),
        )

    def forward(self, x):
        return self.body(x) + self.residual(x)


@register_model("mini_xception", input_size=48)
class MiniXception(nn.Module):
    """mini-Xception (Arriaga et al. 2017): two 8-filter convs, four residual depthwise-separable
    modules (16-32-64-128), a class-wise conv and global average pooling (~60k parameters)."""

    def __init__(self, num_classes=7, in_channels=1):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
        )
        self.modules_ = nn.Sequential(
            *[XceptionModule(a, b) for a, b in [(8, 16), (16, 32), (32, 64), (64, 128)]]
        )
        self.out = nn.Conv2d(128, num_classes, 3, padding=1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.pool(self.out(self.modules_(self.stem(x))))


@register_model("vgg", input_size=48)
class VGGFER(FeaturesHead):
    """VGG-style plain net with batch norm: four stages of two 3x3 convs, then global pooling.
    The default bundled model: plain 3x3 convs are what CPUs, TensorRT and INT8 run best.
    `depths` (convs per stage, default 2 each) deepens the small late stages, where a conv
    costs many parameters but few MACs."""

    def __init__(
        self, num_classes=7, in_channels=1, widths=(32, 64, 128, 256), dropout=0.4, depths=None
    ):
        super().__init__()
        depths = [2] * len(widths) if depths is None else list(depths)
        whole = all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 16 for d in depths)
        if len(depths) != len(widths) or not whole:
            raise ValueError(f"depths must be {len(widths)} whole numbers in 1..16, one per width")
        layers: list[nn.Module] = []
        cin = in_channels
        for i, (w, d) in enumerate(zip(widths, depths)):
            layers += [conv_bn(cin, w)] + [conv_bn(w, w) for _ in range(d - 1)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = Head(cin, num_classes, dropout)
