"""Small fakes that honour the data / backbones contract, for the feature-store tests.

Also a script: ``python features_fakes.py STORE OUT.npz [--sleep S] [--chunk C] [--n N] [--runtime R]``
runs one extraction on the fake dataset (used by the SIGKILL resume test; runtime "auto" by default,
so on the CPU the inference runtime's graph is what is killed and resumed).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from transferkit.errors import ConfigError
from transferkit.io import atomic_path


@dataclass(frozen=True)
class FakePreprocessing:
    input_size: tuple[int, int, int] = (3, 16, 16)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"


@dataclass
class FakeCutPoint:
    name: str
    channels: int


class FakeBackbone:
    """A tiny seeded CNN with cut points stem, stage1, stage2, pool."""

    def __init__(self, seed: int = 0, width: int = 8, size: int = 16, mean=(0.5, 0.5, 0.5)):
        g = torch.Generator().manual_seed(seed)
        self.name = "fake"
        self.arch = f"fakenet{width}"
        self.weights_hash = f"random-init-seed{seed}"
        self.preprocessing = FakePreprocessing(input_size=(3, size, size), mean=tuple(mean))

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        self.model = nn.Sequential(OrderedDict(stem=block(3, width), stage1=block(width, 2 * width),
                                               stage2=block(2 * width, 4 * width)))
        with torch.no_grad():
            for p in self.model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            for m in self.model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        self.cut_points = [FakeCutPoint("stem", width), FakeCutPoint("stage1", 2 * width),
                           FakeCutPoint("stage2", 4 * width), FakeCutPoint("pool", 4 * width)]
        self.calls = 0

    def layer(self, name: str) -> FakeCutPoint:
        for cp in self.cut_points:
            if cp.name == name:
                return cp
        raise ConfigError(f"no cut point {name!r}; valid: {[c.name for c in self.cut_points]}")

    def forward_layers(self, x: torch.Tensor, layers, pool="avg") -> dict[str, torch.Tensor]:
        self.calls += 1
        p = next(self.model.parameters())
        mean = torch.tensor(self.preprocessing.mean, device=p.device).view(1, 3, 1, 1)
        h = (x.to(p.device).float() / 255.0 - mean) / 0.5
        out = {}
        for name, mod in self.model.named_children():
            h = mod(h)
            if name in layers:
                out[name] = (h.mean((2, 3)) if pool == "avg" else F.adaptive_avg_pool2d(h, pool).flatten(1)).float()
        if "pool" in layers:
            out["pool"] = h.mean((2, 3)).float()
        return {name: out[name] for name in layers}


class FakeDataset:
    """N random images of a native size; decode resizes with torch; optional .npy cache."""

    def __init__(self, n: int = 40, seed: int = 0, native=(20, 24), classes=("a", "b"), _arrays=None):
        if _arrays is None:
            rng = np.random.default_rng(seed)
            raw = rng.integers(0, 256, size=(n, 3, *native), dtype=np.uint8)
            labels = np.arange(n, dtype=np.int64) % len(classes)
            splits = np.array(["train" if i < int(0.7 * n) else "val" for i in range(n)])
            _arrays = (raw, labels, splits, [0])
        self._raw, self.labels, self.splits, self._counter = _arrays
        self.classes = list(classes)
        self.name = "fake"
        h = hashlib.sha256(self._raw.tobytes())
        h.update(self.labels.tobytes())
        h.update("".join(self.splits).encode())
        self.fingerprint = h.hexdigest()

    @property
    def decode_calls(self) -> int:
        return self._counter[0]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> FakeDataset:
        idx = np.asarray(indices, dtype=np.int64)
        return FakeDataset(classes=self.classes,
                           _arrays=(self._raw[idx], self.labels[idx], self.splits[idx], self._counter))

    def decode(self, size, interpolation="bilinear", cache_dir=None, *, progress=True) -> np.ndarray:
        self._counter[0] += 1
        t = F.interpolate(torch.from_numpy(self._raw).float(), size=tuple(size), mode="bilinear",
                          align_corners=False)
        arr = t.round().clamp(0, 255).to(torch.uint8).numpy()
        if cache_dir is None:
            return arr
        dest = Path(cache_dir) / f"decoded-{self.fingerprint[:16]}-{size[0]}x{size[1]}.npy"
        if not dest.is_file():
            with atomic_path(dest, suffix=".npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr)
        return np.load(dest, mmap_mode="r")


def main(argv: list[str]) -> None:
    import argparse

    import transferkit.features as tkf
    import transferkit.features.extract as extract_module

    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--runtime", default="auto")
    args = ap.parse_args(argv)
    if args.sleep:
        extract_module._after_chunk = lambda s, e: time.sleep(args.sleep)
    fs = tkf.extract_features(FakeBackbone(), FakeDataset(n=args.n), ["stem", "stage2", "pool"],
                              store_dir=args.store, batch_size=2, chunk_size=args.chunk, progress=False,
                              device="cpu", precision="fp32", runtime=args.runtime)
    np.savez(args.out, **fs.features, from_cache=fs.from_cache)


if __name__ == "__main__":
    main(sys.argv[1:])
