"""Small networks the dask workers can import (tests/ is on their path)."""

from __future__ import annotations

import time

import torch


def conv3d(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = [
        torch.nn.Conv3d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv3d(4, 2, 3, padding=1),
    ]
    return torch.nn.Sequential(*layers).eval()


class Sleepy(torch.nn.Module):
    """The conv net, slowed down so that a test can act while a run is in flight."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.net = conv3d()
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.net(x)


class Exploding(torch.nn.Module):
    """The conv net, but it fails on windows holding values above ``limit``."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.net = conv3d()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.max()) > self.limit:
            raise RuntimeError("simulated failure on a marked window")
        return self.net(x)
