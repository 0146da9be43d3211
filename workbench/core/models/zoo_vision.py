"""Image and tabular models of the zoo: small CNNs, an MLP, CIFAR-style ResNets and a MobileNetV2.

Every factory has the signature ``factory(input_shape, num_classes, **options)`` and only uses
``nn.Module`` layers with static control flow, so the models trace with ``torch.export``, export to
ONNX, and Torch-Pruning's dependency graph and BatchNorm folding can see every layer.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.core.errors import InputError


def scaled(channels: int, width: float) -> int:
    """Apply the width multiplier, keeping at least one channel."""
    return max(1, round(channels * width))


def check_width(name: str, width: float) -> None:
    """Reject a non-positive width before it turns into empty layers."""
    if not width > 0:
        raise InputError(f"{name}: width must be greater than 0 (got {width})")


def describe_shape(input_shape: tuple[int, ...]) -> str:
    """Say what the dataset gives, in words fit for an error message."""
    if len(input_shape) == 1:
        return f"vectors of {input_shape[0]} values"
    return "x".join(str(d) for d in input_shape)


def require_image(name: str, input_shape: tuple[int, ...], min_side: int = 1, why: str = "") -> int:
    """Check the input is C,H,W of at least ``min_side`` pixels; returns the channel count."""
    if len(input_shape) != 3:
        raise InputError(
            f"{name} needs images (channels x height x width); the dataset gives {describe_shape(input_shape)}"
        )
    channels, height, width = input_shape
    if height < min_side or width < min_side:
        reason = f" ({why})" if why else ""
        raise InputError(
            f"{name} needs images of at least {channels}x{min_side}x{min_side}{reason}; "
            f"the dataset gives {describe_shape(input_shape)}"
        )
    return channels


def flat_size(features: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Number of values ``features`` produces per sample, found by a dry run at build time."""
    was_training = features.training
    features.eval()
    with torch.no_grad():
        out = features(torch.zeros(1, *input_shape))
    features.train(was_training)
    return int(out[0].numel())


# --------------------------------------------------------------------------- small CNNs


class SeedCNN(nn.Module):
    """Conv(32)-Pool-Conv(64)-Pool-Conv(64)-FC(64)-classifier: 93,322 parameters on 1x28x28, 10 classes."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: float) -> None:
        super().__init__()
        c1, c2, c3, hidden = scaled(32, width), scaled(64, width), scaled(64, width), scaled(64, width)
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(flat_size(self.features, input_shape), hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fc(self.features(x)))


def seed_cnn(input_shape: tuple[int, ...], num_classes: int, *, width: float = 1.0) -> nn.Module:
    """The classic Keras MNIST CNN, the usual starting point for the optimisation tutorials."""
    check_width("seed_cnn", width)
    # 3x3 conv (-2), pool (/2), 3x3 conv (-2), pool (/2), 3x3 conv (-2) leaves >= 1 pixel from 18 on.
    require_image("seed_cnn", input_shape, 18, "three 3x3 convolutions and two 2x2 poolings")
    return SeedCNN(input_shape, num_classes, width)


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max pooling; pads the first convolution for inputs below 32x32."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: float) -> None:
        super().__init__()
        c1, c2 = scaled(6, width), scaled(16, width)
        h1, h2 = scaled(120, width), scaled(84, width)
        padding = 2 if min(input_shape[1:]) < 32 else 0
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, 5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(
            nn.Linear(flat_size(self.features, input_shape), h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(h2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fc(self.features(x)))


def lenet5(input_shape: tuple[int, ...], num_classes: int, *, width: float = 1.0) -> nn.Module:
    """LeNet-5 (1998): a tiny CNN for digits and other small grey images, quick to train and prune."""
    check_width("lenet5", width)
    # Padded 5x5 conv keeps the size, pool halves, 5x5 conv takes 4, pool halves: 12 pixels leave 1.
    require_image("lenet5", input_shape, 12, "two 5x5 convolutions and two 2x2 poolings")
    return LeNet5(input_shape, num_classes, width)


class MLP(nn.Module):
    """Flatten, then ``depth`` Linear-ReLU(-Dropout) blocks, then the classifier."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: float,
        hidden: int,
        depth: int,
        dropout: float,
    ) -> None:
        super().__init__()
        size = scaled(hidden, width)
        layers: list[nn.Module] = [nn.Flatten()]
        in_features = 1
        for d in input_shape:
            in_features *= d
        for _ in range(depth):
            layers += [nn.Linear(in_features, size), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_features = size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: float = 1.0,
    hidden: int = 256,
    depth: int = 2,
    dropout: float = 0.0,
) -> nn.Module:
    """A fully connected network: the baseline for tabular data and flattened small images."""
    check_width("mlp", width)
    if hidden < 1 or depth < 0:
        raise InputError(f"mlp: hidden must be at least 1 and depth at least 0 (got {hidden}, {depth})")
    if not 0.0 <= dropout < 1.0:
        raise InputError(f"mlp: dropout must be in [0, 1) (got {dropout})")
    return MLP(input_shape, num_classes, width, hidden, depth, dropout)


# --------------------------------------------------------------------------- ResNets


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut (1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        out = out + identity
        return self.relu2(out)


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stride-1 stem (no max pool), BasicBlock stages, global average pool."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stage_blocks: list[int],
        stage_widths: list[int],
        width: float,
    ) -> None:
        super().__init__()
        channels = [scaled(c, width) for c in stage_widths]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        current = channels[0]
        for stage, (count, out_channels) in enumerate(zip(stage_blocks, channels)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(current, out_channels, stride))
                current = out_channels
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(current, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.layers(self.stem(x)))))


def resnet8(input_shape: tuple[int, ...], num_classes: int, *, width: float = 1.0) -> nn.Module:
    """A small CIFAR ResNet (3 stages of 16/32/64 channels): quick residual baseline for pruning and fusing."""
    check_width("resnet8", width)
    channels = require_image("resnet8", input_shape)
    return ResNet(channels, num_classes, [1, 1, 1], [16, 32, 64], width)


def resnet18(input_shape: tuple[int, ...], num_classes: int, *, width: float = 1.0) -> nn.Module:
    """ResNet-18 in its CIFAR form (64-512 channels): a large model to compress on 32x32 colour images."""
    check_width("resnet18", width)
    channels = require_image("resnet18", input_shape)
    return ResNet(channels, num_classes, [2, 2, 2, 2], [64, 128, 256, 512], width)


# --------------------------------------------------------------------------- MobileNetV2


def _scaled8(channels: int, width: float) -> int:
    """MobileNet channel rounding: a multiple of 8, at least 8."""
    return max(8, round(channels * width / 8) * 8)


class ConvBNReLU6(nn.Sequential):
    """Conv-BN-ReLU6, the MobileNet building block (groups=channels makes it depthwise)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """Expand 1x1, depthwise 3x3, project 1x1 (linear); residual when stride 1 and channels match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, 1))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:  # fixed at construction, not data-dependent
            return x + self.conv(x)
        return self.conv(x)


# t (expansion), c (channels), n (blocks), s (stride of the first block): MobileNetV2 cut down for
# 28x28-32x32 inputs, which end at 7x7 / 8x8 instead of vanishing.
MOBILENET_CONFIG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 1), (6, 96, 1, 1)]


class MobileNetV2(nn.Module):
    """Reduced MobileNetV2: stride-1 stem, inverted residual stages, 1x1 conv to 320, global pool."""

    def __init__(self, in_channels: int, num_classes: int, width: float) -> None:
        super().__init__()
        current = _scaled8(32, width)
        layers: list[nn.Module] = [ConvBNReLU6(in_channels, current, 3)]
        for t, c, n, s in MOBILENET_CONFIG:
            out_channels = _scaled8(c, width)
            for i in range(n):
                layers.append(InvertedResidual(current, out_channels, s if i == 0 else 1, t))
                current = out_channels
        last = _scaled8(320, width)
        layers.append(ConvBNReLU6(current, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


def mobilenet_v2(input_shape: tuple[int, ...], num_classes: int, *, width: float = 1.0) -> nn.Module:
    """A reduced MobileNetV2 (depthwise separable, inverted residuals): the mobile/edge deployment target."""
    check_width("mobilenet_v2", width)
    channels = require_image("mobilenet_v2", input_shape)
    return MobileNetV2(channels, num_classes, width)
