"""Export a fitted model to ONNX or TorchScript, and check the export against PyTorch.

The protocol: every ``FittedModel`` declares ``to_module() -> nn.Module``, a module mapping
float images in 0..255, shape (B, 3, H, W) at the backbone's input size, to
logits (B, C); normalisation lives inside it. ``NetworkModel`` returns its TransferNet;
feature-based models (linear / intermediate / hidden) return the backbone truncated at their
layer + pooling + standardisation + head. Softmax is left to the consumer.

Every export is verified: the exported file is run (onnxruntime for ONNX, ``torch.jit.load``
for TorchScript) on a random batch and compared with the PyTorch module in fp32; the largest
absolute logit difference is returned and must stay under ``tolerance`` (1e-4 by default).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .io import atomic_path

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


@dataclass
class ExportResult:
    path: Path
    format: str
    input_shape: tuple[int, ...]
    num_classes: int
    max_abs_diff: float
    classes: list[str]


def _fitted_model(model_or_run_dir: Any, device: str = "cpu"):
    if isinstance(model_or_run_dir, str | os.PathLike):
        from .api import TransferClassifier

        clf = TransferClassifier.load(model_or_run_dir, device=device)
        return clf.model_
    if hasattr(model_or_run_dir, "model_") and hasattr(model_or_run_dir, "classes_"):
        return model_or_run_dir.model_  # a fitted TransferClassifier
    return model_or_run_dir


def export_module(model: Any) -> nn.Module:
    """The fitted model as one fp32 module: float (B,3,H,W) in 0..255 -> logits."""
    to_module = getattr(model, "to_module", None)
    if to_module is None:
        from .strategies import strategy_names

        raise ConfigError(
            f"{type(model).__name__} cannot be exported: it does not implement to_module(). "
            f"Export supports the models of every strategy ({', '.join(strategy_names())})."
        )
    return to_module().float().cpu().eval()


def _input_shape(model: Any, module: nn.Module) -> tuple[int, int, int]:
    backbone = getattr(model, "backbone", None)
    pre = getattr(backbone, "preprocessing", None) or getattr(module, "preprocessing", None)
    if pre is None:
        raise ConfigError("Cannot tell the model's input size: it carries no backbone preprocessing.")
    return tuple(int(v) for v in pre.input_size)


def export(
    model_or_run_dir: Any,
    format: str = "onnx",
    out: str | os.PathLike[str] | None = None,
    *,
    opset: int = 17,
    tolerance: float = 1e-4,
    verify_batch: int = 4,
    seed: int = 0,
) -> ExportResult:
    """Write ``out`` (default ``model.onnx`` / ``model.pt`` in the run directory or cwd) and verify it.

    ``model_or_run_dir``: a FittedModel, a fitted TransferClassifier, or a run directory.
    The batch dimension is dynamic. Raises ConfigError when the export differs from PyTorch by
    more than ``tolerance``.
    """
    if format not in FORMATS:
        raise ConfigError(f"The 'format' parameter must be one of {{'onnx','torchscript'}}. Got {format!r} instead.")
    model = _fitted_model(model_or_run_dir)
    module = export_module(model)
    shape = _input_shape(model, module)
    if out is None:
        base = Path(model_or_run_dir) if isinstance(model_or_run_dir, str | os.PathLike) else Path.cwd()
        out = base / f"model{SUFFIX[format]}"
    out = Path(out)
    gen = torch.Generator().manual_seed(seed)
    example = torch.rand((2, *shape), generator=gen) * 255.0
    with atomic_path(out, suffix=SUFFIX[format]) as tmp:
        if format == "onnx":
            _export_onnx(module, example, tmp, opset)
        else:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", FutureWarning)  # jit is deprecated but still the portable format
                traced = torch.jit.trace(module, example, check_trace=False)
                torch.jit.save(traced, str(tmp))
    batch = torch.rand((verify_batch, *shape), generator=gen) * 255.0
    with torch.no_grad():
        ref = module(batch).float().numpy()
    got = run_exported(out, format, batch.numpy())
    diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    if not diff <= tolerance:
        raise ConfigError(
            f"The {format} export in {out} differs from the PyTorch model by {diff:.3g} (> {tolerance}) on a "
            "random batch; the exported file is kept for inspection. Try another opset or format."
        )
    return ExportResult(
        path=out,
        format=format,
        input_shape=(int(verify_batch), *shape),
        num_classes=int(ref.shape[1]),
        max_abs_diff=diff,
        classes=list(getattr(model, "classes", []) or []),
    )


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    kwargs: dict[str, Any] = dict(input_names=["images"], output_names=["logits"], opset_version=opset)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # TorchScript-based exporter: handles the forward hooks feature models use for cut points.
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                **kwargs,
            )
        except (TypeError, RuntimeError, ImportError):
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                module, (example,), str(path), dynamo=True, external_data=False, dynamic_shapes=({0: batch},), **kwargs
            )


def run_exported(path: str | os.PathLike[str], format: str, images: np.ndarray) -> np.ndarray:
    """Logits from an exported file for float32 images (B,3,H,W) in 0..255."""
    x = np.asarray(images, dtype=np.float32)
    if format == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return sess.run(None, {name: x})[0]
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            m = torch.jit.load(str(path), map_location="cpu").eval()
        with torch.no_grad():
            return m(torch.from_numpy(x)).float().numpy()
    raise ConfigError(f"The 'format' parameter must be one of {{'onnx','torchscript'}}. Got {format!r} instead.")
