"""What runs the network during extraction: PyTorch, or an inference runtime on an ONNX graph.

``open_engine(...)`` yields an ``Engine``: ``engine(uint8 images (B,3,H,W), layers) -> {layer: (B, D)
float32}``. Which runtime is chosen is ``transferkit.runtime.resolve_extract_runtime``'s business
(its docstring has the measurements); this module builds it:

- ``torch``: ``backbone.forward_layers`` in eval mode, channels_last, under ``inference_context``
  (autocast for bf16 / fp16, CUDA with pinned memory).
- ``openvino`` / ``onnxruntime``: the ONNX graph of ``backbone.forward_layers(x, layers, pool=pool)``
  for every layer of the run (uint8 images in, one pooled output per cut point: one pass), exported
  once and cached in ``CacheLayout.compiled`` under a key of the weights' content, the layers, the
  pooling, the preprocessing (input size, mean, std: normalisation is inside the graph) and the
  torch / timm / transferkit versions. A graph file is trusted only when its sidecar JSON holds the
  same key and the file's sha256; anything else is re-exported (with a ``StoreWarning``). Both
  runtimes use ``torch.get_num_threads()`` threads and release the GIL while they run, so the
  extraction loop's decoding thread keeps running beside them.

Exactness: every engine opened for fp32 is checked on two seeded random images against PyTorch eager
fp32 (NCHW), layer by layer: ``max |engine - eager| / max |eager|`` must be at most
``EXACT_TOLERANCE`` (1e-4). The graph always has the outputs of every layer the run computes (not
only the ones a chunk still misses), so a resumed run's chunks come from the same graph and batches
as an uninterrupted run's (bit-identical; the runtimes are deterministic for a fixed batch).

When a runtime cannot be built or fails the check, ``runtime="auto"`` takes the next installed one
(ONNX Runtime after OpenVINO), then PyTorch eager, with one ``RuntimeFallbackWarning`` saying why (once
per reason and process); a runtime the caller forced raises a ``ConfigError`` instead.

OpenVINO's own compiled-blob cache is not used: compiling the cached graph takes ~0.2 s for MobileNet
v1, and its blobs could not be checked the way the graph is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ConfigError
from ..io import atomic_path, atomic_write_json, sha256_file, sha256_json
from ..runtime import CPU_RUNTIME_ORDER, inference_context, runtime_available
from .store import StoreWarning

EXACT_TOLERANCE = 1e-4
ONNX_OPSET = 17
GRAPH_FORMAT = 1
_WARNED: set[str] = set()


class RuntimeFallbackWarning(UserWarning):
    """runtime="auto" could not build the inference runtime and extracts with PyTorch eager instead."""


class Engine:
    """Runs ``layers`` of the backbone on a batch of uint8 images; ``runtime`` names what runs it."""

    runtime = "torch"

    def __call__(self, images: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class TorchEngine(Engine):
    def __init__(self, backbone: Any, pool: str | int, device: torch.device, precision: str) -> None:
        self.backbone, self.pool, self.device, self.precision = backbone, pool, device, precision

    def __call__(self, images: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        xb = torch.from_numpy(images)
        if self.device.type == "cuda":
            xb = xb.pin_memory().to(self.device, non_blocking=True)
        xb = xb.contiguous(memory_format=torch.channels_last)
        with inference_context(self.device, self.precision):
            out = self.backbone.forward_layers(xb, list(layers), pool=self.pool)
        return {name: out[name].float().cpu().numpy() for name in layers}


class GraphEngine(Engine):
    """An inference runtime running the cached ONNX graph; outputs in ``self.layers`` order;
    ``threads``: the threads the runtime itself reports it runs on."""

    def __init__(self, runtime: str, path: Path, layers: list[str], precision: str) -> None:
        self.runtime, self.layers = runtime, list(layers)
        threads = max(1, torch.get_num_threads())
        if runtime == "openvino":
            import openvino as ov

            hint = "bf16" if precision == "bf16" else "f32"
            compiled = ov.Core().compile_model(str(path), "CPU", {
                "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                # LATENCY: one stream using every thread (THROUGHPUT splits them; 25% slower here).
                "PERFORMANCE_HINT": "LATENCY"})
            request, outputs = compiled.create_infer_request(), list(compiled.outputs)
            self.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))

            def run(x: np.ndarray) -> list[np.ndarray]:
                res = request.infer({0: x})
                return [np.array(res[o], dtype=np.float32) for o in outputs]  # copies: buffers are reused
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            self.threads = int(session.get_session_options().intra_op_num_threads)
            name = session.get_inputs()[0].name

            def run(x: np.ndarray) -> list[np.ndarray]:
                return [np.asarray(o, dtype=np.float32) for o in session.run(None, {name: x})]
        self._run = run

    def __call__(self, images: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        if images.dtype != np.uint8:  # the graph's input is uint8; a cast would floor floats silently
            raise ConfigError(f"{self.runtime} extraction takes uint8 images (0..255); got {images.dtype}.")
        outs = dict(zip(self.layers, self._run(np.ascontiguousarray(images)), strict=True))
        return {name: outs[name] for name in layers}


@contextlib.contextmanager
def open_engine(backbone: Any, layers: Sequence[str], pool: str | int, *, runtime: str, device: torch.device,
                precision: str, cache_dir: Path | None, forced: bool) -> Iterator[Engine]:
    """The engine for ``runtime`` (resolved) over ``layers``, or the next one that can be built.

    ``forced``: the caller named the runtime, so a failure to build it raises ConfigError. Otherwise
    ("auto") a runtime that fails is followed by the next installed one of ``CPU_RUNTIME_ORDER`` (the
    graph is shared; when the export itself fails none is tried) and then PyTorch eager, with one
    warning saying why. The backbone's model is in eval mode (and on ``device``, channels_last, for
    PyTorch) inside the block and restored afterwards.
    """
    layers = list(layers)
    name = getattr(backbone, "name", "the backbone")
    candidates = [] if runtime == "torch" else [runtime]
    if not forced and runtime in CPU_RUNTIME_ORDER:
        candidates += [r for r in CPU_RUNTIME_ORDER[CPU_RUNTIME_ORDER.index(runtime) + 1:] if runtime_available(r)]
    reasons = []
    for candidate in candidates:
        try:
            with _eval_on(backbone.model, torch.device("cpu"), channels_last=False):
                engine = _build(backbone, layers, pool, candidate, precision, cache_dir)
        except Exception as exc:  # noqa: BLE001 - any failure to export / build / match means: not this runtime
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:400]
            if forced:
                raise ConfigError(f"runtime={runtime!r} could not be built for {name} {layers} (pool={pool!r}): "
                                  f"{reason}. Use runtime='torch'.") from exc
            reasons.append(f"{candidate}: {reason}")
            if isinstance(exc, _ExportFailed):
                break  # no runtime can run a graph that does not exist
            continue
        if reasons:
            _warn_once(f"runtime='auto' could not build {'; '.join(reasons)} for {name} {layers} "
                       f"(pool={pool!r}). Extracting with {candidate} instead.")
        with _eval_on(backbone.model, None, channels_last=False):
            yield engine
        return
    if reasons:
        _warn_once(f"runtime='auto' could not build {'; '.join(reasons)} for {name} {layers} (pool={pool!r}). "
                   "Extracting with PyTorch eager instead.")
    engine = TorchEngine(backbone, pool, device, precision)
    with _eval_on(backbone.model, device, channels_last=True):
        yield engine


class _ExportFailed(RuntimeError):
    """The ONNX export of the cut points failed (e.g. an operation the exporter cannot express)."""


def _build(backbone: Any, layers: list[str], pool: str | int, runtime: str, precision: str,
           cache_dir: Path | None) -> GraphEngine:
    try:
        path = onnx_graph(backbone, layers, pool, cache_dir)
    except Exception as exc:
        raise _ExportFailed(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    engine = GraphEngine(runtime, path, layers, precision)
    if precision == "fp32":
        check_exact(engine, backbone, layers, pool)
    return engine


def check_exact(engine: Engine, backbone: Any, layers: list[str], pool: str | int, n: int = 2) -> dict[str, float]:
    """{layer: max |engine - eager| / max |eager|} on ``n`` seeded random images; raises when > tolerance."""
    size = tuple(int(v) for v in backbone.preprocessing.input_size)
    x = torch.randint(0, 256, (n, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = backbone.forward_layers(x, layers, pool=pool)
    got = engine(x.numpy(), layers)
    errors = {name: relative_error(got[name], ref[name].float().numpy()) for name in layers}
    bad = {k: v for k, v in errors.items() if not v <= EXACT_TOLERANCE}
    if bad:
        raise RuntimeError(f"{engine.runtime} differs from PyTorch eager fp32 by {bad} (relative, "
                           f"allowed {EXACT_TOLERANCE})")
    return errors


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """``max |got - ref| / max |ref|`` (0 when both are all zero): the exactness measure of a layer."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf")
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    diff = float(np.abs(got - ref).max()) if ref.size else 0.0
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


# ------------------------------------------------------------------------------ the ONNX graph
def graph_key_meta(backbone: Any, layers: list[str], pool: str | int) -> dict[str, Any]:
    """Everything that determines the exported graph (hashed into its file name)."""
    pre = backbone.preprocessing
    return {
        "format": GRAPH_FORMAT, "opset": ONNX_OPSET, "transferkit": __version__,
        "torch": torch.__version__, "timm": _version("timm"),
        "arch": str(getattr(backbone, "arch", getattr(backbone, "name", ""))),
        "weights_hash": str(getattr(backbone, "weights_hash", "")),
        "weights_content": weights_digest(backbone.model),
        "layers": list(layers), "pool": pool,
        "input_size": [int(v) for v in pre.input_size], "mean": [float(v) for v in pre.mean],
        "std": [float(v) for v in pre.std],
    }


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (name, dtype, shape, bytes): the weights the graph bakes in."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def onnx_graph(backbone: Any, layers: list[str], pool: str | int, cache_dir: Path | None) -> Path:
    """The cached ONNX graph of ``forward_layers(x, layers, pool)`` (exported now if missing or unusable)."""
    if cache_dir is None:
        from ..runtime import CacheLayout

        cache_dir = CacheLayout.default().compiled
    meta = graph_key_meta(backbone, layers, pool)
    key = sha256_json(meta)
    path, sidecar = Path(cache_dir) / f"{key}.onnx", Path(cache_dir) / f"{key}.json"
    problem = _graph_problem(path, sidecar, key)
    if problem is None:
        return path
    if path.exists() or sidecar.exists():
        warnings.warn(f"Cached ONNX graph {path} is unusable ({problem}); exporting it again.", StoreWarning,
                      stacklevel=4)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".onnx") as tmp:
        _export(backbone, layers, pool, tmp)
    # The sidecar is written last: a graph without one (a run killed in between) is never trusted.
    atomic_write_json(sidecar, {"key": key, "sha256": sha256_file(path), "meta": meta})
    return path


def _graph_problem(path: Path, sidecar: Path, key: str) -> str | None:
    if not path.is_file():
        return "missing"
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"no readable record ({exc.__class__.__name__})"
    if not isinstance(record, dict) or record.get("key") != key:
        return "record of another graph"
    if record.get("sha256") != sha256_file(path):
        return "checksum mismatch"
    return None


class _Layers(torch.nn.Module):
    """``forward_layers`` as a module with one output per layer (the model registered for export)."""

    def __init__(self, backbone: Any, layers: list[str], pool: str | int) -> None:
        super().__init__()
        self.net = backbone.model
        self.backbone, self.layers, self.pool = backbone, layers, pool

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.backbone.forward_layers(x, self.layers, pool=self.pool)
        return tuple(out[name].float() for name in self.layers)


def _export(backbone: Any, layers: list[str], pool: str | int, path: Path) -> None:
    size = tuple(int(v) for v in backbone.preprocessing.input_size)
    example = torch.randint(0, 256, (2, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    outputs = [f"out{i}" for i in range(len(layers))]  # layer names may not be valid ONNX names
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: forward_layers reads cut points with hooks and stops the forward
        # pass early with an exception, which tracing follows and torch.export does not.
        torch.onnx.export(_Layers(backbone, layers, pool).eval(), (example,), str(path), dynamo=False,
                          input_names=["images"], output_names=outputs, opset_version=ONNX_OPSET,
                          dynamic_axes={"images": {0: "batch"}, **{o: {0: "batch"} for o in outputs}})


# ------------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _eval_on(model: torch.nn.Module, device: torch.device | None, *, channels_last: bool) -> Iterator[None]:
    """Eval mode (and on ``device``, channels_last when asked) inside; restored afterwards
    (safetensors needs contiguous parameters)."""
    was_training = model.training
    first = next(model.parameters(), None)
    old_device = first.device if first is not None else torch.device("cpu")
    model.eval()
    if device is not None:
        model.to(device=device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    try:
        yield
    finally:
        if device is not None:
            model.to(device=old_device, memory_format=torch.contiguous_format)
        model.train(was_training)


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeFallbackWarning, stacklevel=4)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return ""
