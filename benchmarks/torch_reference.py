"""The CARL step of benchmarks/throughput.py in eager PyTorch, for a pairs/s comparison.

Same network as carl_tf at the benchmark's setting: a ResNet-18 (CIFAR stem: 3x3 conv, stride 1,
no pooling; BasicBlocks, zero-initialised last BatchNorm of each block; ImageNet normalisation
inside), the BYOL-style head (Linear without bias -> BatchNorm -> ReLU, twice, then Linear to
128), a bias-free assigner with K prototypes, and the CARL loss (eq. 4 + lambda * eq. 5, positive
view detached) with SGD(momentum 0.9, weight decay 5e-4). Views are premade, as in the bare TF
step. Written in plain torch: torchvision is not installed here.

PyTorch is not a project dependency. Run it from a separate environment:
    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchvenv/bin/python benchmarks/torch_reference.py --backbone_width 16
Prints pairs/s, then one JSON line.
"""

import argparse
import json
import math
import statistics
import time

import torch
from torch import nn
from torch.nn import functional

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EPSILON = 1.1920929e-07  # carl_tf.method.losses clips logs at float32 epsilon too


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity, as in carl_tf
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x):
        y = functional.relu(self.bn1(self.conv1(x)))
        return functional.relu(self.shortcut(x) + self.bn2(self.conv2(y)))


class ResNet18(nn.Module):
    """Images (N, 3, H, W) in [0, 255] -> pooled features (N, 8 * width)."""

    def __init__(self, width: int):
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        blocks, channels = [], width
        for stage in range(4):
            out = width * 2**stage
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(channels, out, stride))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = channels

    def forward(self, images):
        x = self.stem((images - self.mean) / self.std)
        return self.blocks(x).mean(dim=(2, 3))


class CARLNet(nn.Module):
    def __init__(self, width: int, hidden: int, projection_dim: int, num_prototypes: int):
        super().__init__()
        self.backbone = ResNet18(width)
        layers, size = [], self.backbone.feature_dim
        for _ in range(2):
            layers += [nn.Linear(size, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            size = hidden
        self.head = nn.Sequential(*layers, nn.Linear(size, projection_dim))
        self.assigner = nn.Linear(projection_dim, num_prototypes, bias=False)

    def forward(self, images):
        return functional.softmax(self.assigner(self.head(self.backbone(images))), dim=-1)


def carl_loss(p_anchor, p_positive, kl_weight: float):
    agreement = (p_anchor * p_positive).sum(dim=-1)
    consistency = -torch.log(agreement.clamp(EPSILON, 1.0)).mean()
    mean = p_anchor.mean(dim=0)
    kl = math.log(mean.shape[0]) + (mean * torch.log(mean.clamp(EPSILON, 1.0))).sum()
    return consistency + kl_weight * kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone_width", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels_last", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = CARLNet(args.backbone_width, hidden=2048, projection_dim=128, num_prototypes=100)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.03 * args.batch_size / 256, momentum=0.9, weight_decay=5e-4
    )
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    views = [torch.rand(shape) * 255 for _ in range(2)]
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    model.train()

    def step():
        p_a = model(views[0])
        with torch.no_grad():  # the positive view is a target (stop-gradient)
            p_b = model(views[1])
        loss = carl_loss(p_a, p_b, kl_weight=4.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(args.warmup):
        step()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds.append(time.perf_counter() - start)
    pairs_per_s = args.batch_size * args.steps / statistics.median(seconds)
    print(f"eager PyTorch CARL step (premade views): {pairs_per_s:.1f} pairs/s")
    figures = {
        "torch": torch.__version__,
        "threads": args.threads,
        "channels_last": args.channels_last,
        "backbone_width": args.backbone_width,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "steps": args.steps * args.repeats,
        "torch_pairs_per_s": round(pairs_per_s, 2),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
