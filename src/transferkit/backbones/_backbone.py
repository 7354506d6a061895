"""``Backbone``: a pretrained (or random) network with its preprocessing and named cut points.

Also ``TransferNet``, the trainable network built from a backbone (normalize -> body -> new head).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import BackboneError, ConfigError
from ._head import build_head

POOL = "pool"


@dataclass(frozen=True)
class Preprocessing:
    """What the weights expect: whole image resized to ``input_size`` then ``(x/255 - mean) / std``."""

    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) to resize images to."""
        return (self.input_size[1], self.input_size[2])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class CutPoint:
    """A named place to read features from. ``channels``: width D of the pooled vector;
    ``reduction``: input size / feature-map size there (for "pool": that of the map it pools)."""

    name: str
    module: nn.Module = field(repr=False, compare=False)
    channels: int
    reduction: int
    module_name: str = ""


class _StopForward(Exception):
    """Raised from a hook once every requested cut point has been read (skips deeper layers)."""


def _pool_tensor(t: torch.Tensor, pool: str | int) -> torch.Tensor:
    t = t.float()
    if t.ndim == 2:
        return t
    if t.ndim != 4:
        raise BackboneError(f"Expected a (B,C,H,W) or (B,D) activation, got shape {tuple(t.shape)}.")
    if pool == "avg":
        return t.mean(dim=(2, 3))
    return F.adaptive_avg_pool2d(t, int(pool)).flatten(1)


def _check_pool(pool: str | int) -> str | int:
    if pool == "avg":
        return pool
    if isinstance(pool, int) and not isinstance(pool, bool) and pool >= 1:
        return pool
    raise ConfigError(f"pool must be 'avg' or a positive integer grid size g (g x g cells); got {pool!r}.")


def _first_tensor(t: Any) -> torch.Tensor:
    while isinstance(t, tuple | list):
        t = t[0]
    return t


def group_parameters(model: nn.Module, cut_modules: Sequence[tuple[str, str]],
                     exclude: str | None = None) -> list[tuple[str, list[nn.Parameter]]]:
    """Partition ``model``'s parameters into ``cut_modules``' groups (+ "top") by module order.

    A parameter belongs to the first cut point whose module ends (in ``named_modules`` order) at or
    after the parameter's module; what comes after the last cut point is "top". Parameters under
    ``exclude`` (the source classifier) are left out. Every other parameter appears exactly once.
    """
    names = [n for n, _ in model.named_modules()]
    ends: list[int] = []
    for gname, mpath in cut_modules:
        idx = [i for i, n in enumerate(names) if n == mpath or n.startswith(mpath + ".")]
        if not idx:
            raise BackboneError(f"Cut point {gname!r}: module {mpath!r} not found in the network.")
        ends.append(max([idx[-1], *ends[-1:]]))
    groups: list[tuple[str, list[nn.Parameter]]] = [(g, []) for g, _ in cut_modules] + [("top", [])]
    seen: set[int] = set()
    for i, (mname, mod) in enumerate(model.named_modules()):
        if exclude and (mname == exclude or mname.startswith(exclude + ".")):
            continue
        for p in mod.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            gi = next((k for k, e in enumerate(ends) if i <= e), len(ends))
            groups[gi][1].append(p)
    return groups


class TransferNet(nn.Module):
    """normalize -> backbone body (pooled features) -> new head. Input: uint8/float in [0, 255].

    ``body`` is a copy of the backbone network with its source classifier removed, so
    ``body(x_normalized)`` returns the pooled pre-logits features (width ``num_features``).
    """

    def __init__(self, body: nn.Module, head: nn.Module, preprocessing: Preprocessing,
                 group_spec: Sequence[tuple[str, str]], *, num_features: int, arch: str, family: str,
                 model_kwargs: dict[str, Any], classifier_name: str) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.register_buffer("mean", torch.tensor(preprocessing.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.preprocessing = preprocessing
        self.group_spec = tuple(group_spec)
        self.num_features = num_features
        self.arch = arch
        self.family = family
        self.model_kwargs = dict(model_kwargs)
        self.classifier_name = classifier_name

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        # x.float() on every dtype: no Python branching, so jit.trace / ONNX export see one graph.
        return (x.float() / 255.0 - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x)
        # The head runs in fp32 even under bf16 autocast: a probe-initialised head has large
        # weights (the feature standardisation is folded into them) and bf16 rounding of its
        # logits cost 3.5 points on digits.
        with torch.autocast(device_type=feats.device.type, enabled=False):
            return self.head(feats.float())

    def backbone_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """Body parameters grouped as stem, stage1..N, top (same grouping as Backbone.param_groups)."""
        return group_parameters(self.body, self.group_spec)


class Backbone:
    """A network plus everything needed to use it correctly. Built by ``load_backbone``."""

    def __init__(self, *, name: str, arch: str, spec: str, family: str, model: nn.Module,
                 model_kwargs: dict[str, Any], pretrained: bool, weights_hash: str,
                 weights_sha256: str | None, weights_source: str, preprocessing: Preprocessing,
                 source_classes: list[str] | None, num_classes: int, classifier_name: str,
                 stem_module: str, stage_modules: Sequence[str], seed: int = 0,
                 source_dataset: str | None = None, known_reductions: dict[str, int] | None = None) -> None:
        self.name = name
        self.arch = arch
        self.spec = spec
        self.family = family
        self.model = model.eval()
        self.model_kwargs = dict(model_kwargs)
        self.pretrained = pretrained
        self.weights_hash = weights_hash
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source
        self.preprocessing = preprocessing
        self.num_classes = num_classes
        self.has_source_head = pretrained and num_classes > 0
        self.source_classes = source_classes if self.has_source_head else None
        if self.source_classes is not None and len(self.source_classes) != num_classes:
            raise BackboneError(
                f"Backbone {name}: {len(self.source_classes)} source class names for a "
                f"{num_classes}-class head; the class names file does not match the weights."
            )
        self.source_dataset = source_dataset
        self.classifier_name = classifier_name
        self.seed = seed
        stage_names = [f"stage{i}" for i in range(1, len(stage_modules) + 1)]
        self._group_spec: tuple[tuple[str, str], ...] = (
            ("stem", stem_module), *zip(stage_names, stage_modules, strict=True))
        self.cut_points: list[CutPoint] = self._probe_cut_points(known_reductions or {})
        self.num_features = self.layer(POOL).channels

    # -- introspection -------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"Backbone(name={self.name!r}, arch={self.arch!r}, pretrained={self.pretrained}, "
                f"num_features={self.num_features}, layers={self.layer_names})")

    @property
    def layer_names(self) -> list[str]:
        return [cp.name for cp in self.cut_points]

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> Backbone:
        self.model.to(device)
        return self

    def layer(self, name: str) -> CutPoint:
        for cp in self.cut_points:
            if cp.name == name:
                return cp
        raise ConfigError(
            f"Backbone {self.name!r} has no cut point {name!r}; valid names (shallow to deep): "
            f"{', '.join(self.layer_names)}."
        )

    def _module(self, path: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError as exc:
            raise BackboneError(f"Backbone {self.name!r}: module {path!r} not found ({exc}).") from exc

    def _probe_cut_points(self, known_reductions: dict[str, int]) -> list[CutPoint]:
        """Run one small forward pass to measure every cut point's width (and its stride, unless the
        network declares it, e.g. timm's feature_info: unpadded convs make small-input strides inexact)."""
        _, h, w = self.preprocessing.input_size
        s = max(min(max(h, w), 128), 96)
        shapes: dict[str, tuple[int, ...]] = {}
        handles = []
        for cname, mpath in self._group_spec:
            def hook(_m, _a, out, cname=cname):
                shapes[cname] = tuple(_first_tensor(out).shape)
            handles.append(self._module(mpath).register_forward_hook(hook))

        def pre_hook(_m, args):
            shapes[POOL] = tuple(_first_tensor(args).shape)
        handles.append(self._module(self.classifier_name).register_forward_pre_hook(pre_hook))
        try:
            with torch.no_grad():
                self.model(torch.zeros(1, 3, s, s, device=self.device))
        except Exception as exc:
            raise BackboneError(
                f"Backbone {self.name!r}: a test forward pass at {s}x{s} failed: {exc}") from exc
        finally:
            for hd in handles:
                hd.remove()
        cps = []
        for cname, mpath in self._group_spec:
            shp = shapes.get(cname)
            if shp is None or len(shp) != 4:
                raise BackboneError(f"Backbone {self.name!r}: cut point {cname!r} ({mpath}) did not produce "
                                    f"a (B,C,H,W) activation (got {shp}).")
            red = known_reductions.get(mpath) or 2 ** round(math.log2(s / shp[2]))
            cps.append(CutPoint(cname, self._module(mpath), int(shp[1]), int(red), mpath))
        pshape = shapes.get(POOL)
        if pshape is None or len(pshape) != 2:
            raise BackboneError(f"Backbone {self.name!r}: the pooled features have shape {pshape}, "
                                "expected (B, D).")
        cps.append(CutPoint(POOL, self._module(self.classifier_name), int(pshape[1]), cps[-1].reduction,
                            self.classifier_name))
        return cps

    # -- inference -------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or float in [0, 255], (B,3,H,W) -> float32 ``(x/255 - mean) / std`` of this backbone."""
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"Expected images as a (B, 3, H, W) tensor; got shape {tuple(x.shape)}.")
        mean = torch.tensor(self.preprocessing.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocessing.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def forward_layers(self, x: torch.Tensor, layers: Sequence[str],
                       pool: str | int = "avg") -> dict[str, torch.Tensor]:
        """One forward pass -> {layer: (B, D) float32}, each activation average-pooled (globally, or
        to a g x g grid then flattened when ``pool`` is an int; "pool" is already a vector)."""
        if isinstance(layers, str):
            layers = [layers]
        wanted = list(dict.fromkeys(layers))
        if not wanted:
            raise ConfigError("forward_layers needs at least one layer name; valid: "
                              + ", ".join(self.layer_names))
        cps = [self.layer(n) for n in wanted]
        pool = _check_pool(pool)
        out: dict[str, torch.Tensor] = {}

        def store(name: str, t: Any) -> None:
            out[name] = _pool_tensor(_first_tensor(t), "avg" if name == POOL else pool)
            if len(out) == len(wanted):
                raise _StopForward

        handles = []
        for cp in cps:
            if cp.name == POOL:
                handles.append(cp.module.register_forward_pre_hook(lambda _m, a: store(POOL, a)))
            else:
                handles.append(cp.module.register_forward_hook(lambda _m, _a, o, n=cp.name: store(n, o)))
        try:
            with torch.no_grad():
                self.model(self.normalize(x.to(self.device)))
        except _StopForward:
            pass
        finally:
            for hd in handles:
                hd.remove()
        missing = [n for n in wanted if n not in out]
        if missing:
            raise BackboneError(
                f"Backbone {self.name!r}: layers {missing} were not reached by the forward pass.")
        return {n: out[n] for n in wanted}

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the source head (e.g. the 1000 ImageNet classes), float32 (B, num_classes)."""
        if not self.has_source_head:
            raise BackboneError(
                f"Backbone {self.name!r} has no source classifier head (its weights have none, or it is "
                "randomly initialised); source_logits is unavailable."
            )
        with torch.no_grad():
            return self.model(self.normalize(x.to(self.device))).float()

    # -- training --------------------------------------------------------------------------------
    def param_groups(self) -> list[tuple[str, list[nn.Parameter]]]:
        """[("stem", ...), ("stage1", ...), ..., ("top", ...)]: every body parameter exactly once,
        the source classifier excluded."""
        return group_parameters(self.model, self._group_spec, exclude=self.classifier_name)

    def build_network(self, num_classes: int, hidden: Sequence[int] = (),
                      dropout: float = 0.0) -> TransferNet:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer; got {num_classes!r}.")
        hidden = tuple(hidden)
        if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden):
            raise ConfigError(f"hidden must be a tuple of positive layer widths; got {hidden!r}.")
        if not isinstance(dropout, int | float) or not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {dropout!r}.")
        body = copy.deepcopy(self.model)
        if self.family == "timm":
            body.reset_classifier(0)
        else:
            body.set_submodule(self.classifier_name, nn.Identity())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            head = build_head(self.num_features, num_classes, hidden, float(dropout))
        head.to(self.device)
        net = TransferNet(body, head, self.preprocessing, self._group_spec, num_features=self.num_features,
                          arch=self.arch, family=self.family, model_kwargs=self.model_kwargs,
                          classifier_name=self.classifier_name)
        return net.to(self.device).eval()

    # -- description -----------------------------------------------------------------------------
    def card(self) -> dict[str, Any]:
        """A JSON-able description of this backbone (architecture, weights, preprocessing, cut points)."""
        from .. import __version__

        return {
            "format": "transferkit-backbone-card/1",
            "name": self.name,
            "architecture": self.arch,
            "family": self.family,
            "model_kwargs": dict(self.model_kwargs),
            "spec": self.spec,
            "pretrained": self.pretrained,
            "weights": self.weights_source,
            "weights_sha256": self.weights_sha256,
            "weights_hash": self.weights_hash,
            "num_classes": self.num_classes,
            "num_features": self.num_features,
            **self.preprocessing.to_dict(),
            "source_dataset": self.source_dataset if self.has_source_head or self.pretrained else None,
            "source_classes": None,
            "cut_points": [
                {"name": c.name, "module": c.module_name, "channels": c.channels, "reduction": c.reduction}
                for c in self.cut_points
            ],
            "transferkit_version": __version__,
        }
