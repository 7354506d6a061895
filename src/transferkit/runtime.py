"""Where and how numbers are computed (device, precision) and where they are cached on disk.

Device: ``resolve_device("auto")`` picks CUDA when it is available, else the CPU; a device that is
asked for by name but is not on this machine is a ``ConfigError`` (never a silent fallback). The
feature store, the training loop (through Fabric) and prediction all resolve it here.

Precision has one vocabulary, ``PRECISIONS = ("auto", "fp32", "bf16", "fp16")``; Lightning's names
(``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``) are accepted as synonyms, because training
configurations stored in old run directories and checkpoints hold them, and ``lightning_precision``
is the one place that maps to them. ``resolve_precision(precision, device, purpose)`` resolves
``"auto"`` differently for extraction and for training, on purpose:

=============  ====================================  =============================================
``auto`` on    purpose="extract" (feature store,      purpose="train" (fine-tuning, pretrain)
               advisor passes)
=============  ====================================  =============================================
CPU            fp32 (bf16 failed the accuracy rule   bf16 (autocast) when oneDNN runs bf16
               below)                                (``torch.ops.mkldnn._is_mkldnn_bf16_supported``),
                                                     else fp32
CUDA           bf16 when the GPU supports it,        bf16 when the GPU supports it, else fp16
               else fp16                             (AMP with a grad scaler)
=============  ====================================  =============================================

An explicit ``"fp32"`` or ``"bf16"`` is used as given; ``"fp16"`` is refused on the CPU (CPU fp16
convolutions are slow and inexact). Why training takes bf16 on the CPU and extraction does not:
training measures its own validation accuracy and is 2.9x faster per epoch with it
(``benchmarks/train.py``), while stored features are reused by every later probe, so they must not
move a linear probe by more than the rule allows.

The extraction rule: bf16 (+ channels_last) must keep linear-probe accuracy within 0.3 points of
fp32. bf16 autocast is about 2x faster on CPUs with native bf16 (AVX512-BF16 / AMX), but it failed
the rule, so extraction's "auto" does not pick it on the CPU (emulated bf16 on older CPUs would also
be slower than fp32). Measured (mobilenetv1_075 Keras card, "pool" features, StandardScaler +
LogisticRegression, AMD EPYC 2 cores with AVX512-BF16, torch 2.15 CPU; see ``BF16_MEASUREMENTS``):

- hymenoptera train -> val (153 images; one image = 0.65 points): fp32 0.9085, bf16 0.9085 at C=1
  (0.9150 / 0.9150 at C=0.1; 0.9216 / 0.9281 at C=0.01). Feature error bf16 vs fp32: max abs 1.05,
  max abs / max |fp32| 0.175, mean |diff| / mean |fp32| 0.058; stage4: 0.18, 0.052, 0.013.
- flowers5 stratified-dedup split, train -> test (1,297 test images): fp32 0.6168, bf16 0.6083 at C=1
  (-0.85 points: FAILS the rule). Feature error: max abs 3.58, max abs / max |fp32| 0.60,
  mean |diff| / mean |fp32| 0.149.
- fp32 channels_last vs fp32 NCHW: max abs feature difference 1e-5, same probe accuracy.

Re-measured with ``benchmarks/precision.py`` (the linear strategy's own cross-validated probe, paired
fp32/bf16 features on the same split): flowers5 over 5 stratified duplicate-safe 70/30 splits, bf16 - fp32
= +0.23, -0.15, -1.08, -0.46, -0.31 points (mean -0.36, standard error 0.21); hymenoptera -0.65 (one
image of 153). Still outside the rule, so extraction's "auto" stays fp32 on the CPU.

Why bf16 moves this network so much: its pooled codes differ from fp32's by 14% (mean relative), and
most of that is made in the 112x112 and 56x56 depthwise blocks (each of blocks.0 / blocks.1's convs in
bf16 alone adds 1-8%); folding BatchNorm into the convolutions does not help (13%), keeping the stem and
the first two stages in fp32 brings it to 3.7% but those stages are where the CPU time goes, so it
is then no faster than ~1.5x fp32.

Extraction runtime: ``resolve_extract_runtime(runtime, device, precision)`` picks what runs the
network when features are extracted, from ``EXTRACT_RUNTIMES = ("auto", "torch", "openvino",
"onnxruntime")``. ``"auto"``: on the CPU at fp32 an inference runtime running the ONNX graph of the
backbone (every requested cut point an output of one pass; ``transferkit.features.runtimes``), OpenVINO
when it is importable, else ONNX Runtime, else PyTorch eager; on CUDA, and for bf16 on the CPU,
PyTorch (autocast, as before). Both runtimes are exact: their features match PyTorch eager fp32 within
1e-4 relative (max |a - b| / max |b| per layer; measured <= 8e-6 on the MobileNet v1 card's cut
points), checked every time an engine is opened. A forced runtime that is not installed, or that
cannot run the device or precision asked for, is a ``ConfigError`` (never a silent change); ``"auto"``
takes the next runtime, then PyTorch, with one warning, when a graph cannot be built.

Why OpenVINO first: it was the fastest exact path in every measurement on this CPU (2 cores, AVX512
with native bf16; MobileNet v1 0.75 card, 224x224, pre-decoded batches of 16, fp32, interleaved
repetitions in one run on a machine shared with other work, so read the ratios): OpenVINO 117.5,
ONNX Runtime 67.5, PyTorch eager channels_last 23.2, eager NCHW 16.6 images/s
(``benchmarks/extract.py``; a second run 65.1 / 42.6 / 6.9 / 4.8, a third with four cut points 331 /
171 at batch 16 and 302 / 184 at 32). Issue 14 measured 114 / 99.5 / 52.6 / 49.6 on a quieter machine:
OpenVINO's lead over ONNX Runtime is 1.15-1.9x, the runtimes' lead over eager shrinks when the machine is
quiet (PyTorch's OpenMP threads suffer most from sharing cores). bf16 (OpenVINO 2x its fp32, PyTorch
autocast) moves the features by ~10% relative, so it stays opt-in (``precision="bf16"``).

Cache: ``CacheLayout(root)`` names the folders of the on-disk cache, ``root/features`` (the feature
store), ``root/decoded`` (uint8 decoded images, shared by the feature store and the network
strategies, so one run decodes a dataset once), ``root/compiled`` (the ONNX graphs the extraction
runtimes run, keyed by weights, cut points, pooling and input size) and ``root/runs`` (temporary run
directories).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Lightning Fabric's names of the same precisions (stored in older training configurations).
LIGHTNING_PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
_FROM_LIGHTNING = {v: k for k, v in LIGHTNING_PRECISIONS.items()}
PURPOSES = ("extract", "train")
Purpose = Literal["extract", "train"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

EXTRACT_RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
# What "auto" tries on the CPU at fp32, fastest first (the module docstring says why).
CPU_RUNTIME_ORDER = ("openvino", "onnxruntime")
_INSTALL = {"openvino": "pip install openvino", "onnxruntime": "pip install onnxruntime"}

BF16_MEASUREMENTS = {
    "hymenoptera": {"fp32": 0.9085, "bf16": 0.9085, "max_abs": 1.048, "mean_rel": 0.0584},
    "flowers5": {"fp32": 0.6168, "bf16": 0.6083, "max_abs": 3.576, "mean_rel": 0.1485},
    # benchmarks/precision.py: cross-validated probe, paired splits (bf16 - fp32, points)
    "flowers5_5_splits": {"diffs": [0.23, -0.15, -1.08, -0.46, -0.31], "mean": -0.36, "standard_error": 0.21},
    "hymenoptera_cv_probe": {"fp32": 0.9281, "bf16": 0.9216, "diff": -0.65},
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` as asked.

    Raises ConfigError when the named device does not exist on this machine.
    """
    if isinstance(device, torch.device):
        spec = str(device)
    elif isinstance(device, str):
        spec = device.strip().lower()
    else:
        raise ConfigError(
            f"The 'device' parameter must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {device!r} instead."
        )
    if spec == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"The 'device' parameter must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {device!r} instead."
        ) from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={device!r} was asked for but CUDA is not available on this machine "
                f"(torch {torch.__version__}). Use device='auto' or device='cpu'."
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(
                f"device={device!r} was asked for but this machine has {count} CUDA device(s) "
                f"(cuda:0..cuda:{count - 1}). Use one of those or device='auto'."
            )
        return dev
    raise ConfigError(
        f"The 'device' parameter must be 'auto', 'cpu', 'cuda' or 'cuda:N'. Got {device!r} instead."
    )


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU executes bf16 natively (AVX512-BF16 or AMX-BF16)."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch
        capability = ""
    if "AMX" in str(capability).upper():
        return True
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def canonical_precision(precision: str) -> str:
    """``precision`` in this module's vocabulary (``PRECISIONS``); Lightning's names are accepted too."""
    if isinstance(precision, str) and precision in _FROM_LIGHTNING:
        return _FROM_LIGHTNING[precision]
    if precision not in PRECISIONS:
        lightning = ", ".join(f"'{v}'" for v in LIGHTNING_PRECISIONS.values())
        raise ConfigError(
            f"The 'precision' parameter must be one of {list(PRECISIONS)} (or Lightning's {lightning}). "
            f"Got {precision!r} instead."
        )
    return precision


def lightning_precision(precision: str) -> str:
    """Lightning Fabric's name for ``precision`` ("auto" stays "auto"): "32-true", "bf16-mixed", "16-mixed"."""
    name = canonical_precision(precision)
    return LIGHTNING_PRECISIONS.get(name, name)


def _cpu_trains_bf16() -> bool:
    # oneDNN's check, which the training loop has always used (unlike cpu_has_fast_bf16, it does not
    # require native bf16 instructions: oneDNN also runs bf16 on some CPUs without them).
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device | str, purpose: Purpose = "extract") -> str:
    """``precision`` for ``device`` as ``"fp32"``, ``"bf16"`` or ``"fp16"``; ``"auto"`` per the module's table.

    ``purpose`` is ``"extract"`` (features: the feature store, the advisor's passes) or ``"train"``
    (the training loop); they differ for ``"auto"`` on the CPU. Raises ConfigError for an unknown
    precision and for fp16 on the CPU.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    name = canonical_precision(precision)
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if name == "auto":
        if dev.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if dev.type == "cpu" and purpose == "train":
            return "bf16" if _cpu_trains_bf16() else "fp32"
        return "fp32"
    if name == "fp16" and dev.type == "cpu":
        raise ConfigError(
            f"precision={precision!r} is only supported on CUDA (CPU fp16 convolutions are slow and inexact). "
            "Use precision='bf16', 'fp32' or 'auto' on the CPU."
        )
    return name


@functools.cache
def runtime_available(name: str) -> bool:
    """True when the inference runtime ``name`` ("openvino", "onnxruntime") can be imported."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve_extract_runtime(runtime: str, device: torch.device | str, precision: str) -> str:
    """What runs the network for feature extraction: "torch", "openvino" or "onnxruntime".

    ``precision`` is the resolved one (``resolve_precision``). ``"auto"``: on the CPU at fp32 the first
    importable of ``CPU_RUNTIME_ORDER``, else "torch"; "torch" on CUDA and for bf16 (the precision
    rule was measured on PyTorch's bf16 autocast). Raises ConfigError for an unknown name, for a
    runtime that is not installed, for openvino / onnxruntime on CUDA, and for onnxruntime in bf16.
    """
    if not isinstance(runtime, str) or runtime.strip().lower() not in EXTRACT_RUNTIMES:
        raise ConfigError(
            f"The 'runtime' parameter must be one of {list(EXTRACT_RUNTIMES)}. Got {runtime!r} instead."
        )
    name = runtime.strip().lower()
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if name == "auto":
        if dev.type != "cpu" or precision != "fp32":
            return "torch"
        return next((r for r in CPU_RUNTIME_ORDER if runtime_available(r)), "torch")
    if name == "torch":
        return name
    if dev.type != "cpu":
        raise ConfigError(
            f"runtime={runtime!r} runs on the CPU only; the device is {dev}. Use runtime='auto' or 'torch' "
            "(PyTorch with autocast on CUDA), or device='cpu'."
        )
    if not runtime_available(name):
        raise ConfigError(
            f"runtime={runtime!r} was asked for but {name} is not installed ({_INSTALL[name]}). "
            "Use runtime='auto' to take the fastest one installed."
        )
    if name == "onnxruntime" and precision != "fp32":
        raise ConfigError(
            f"runtime='onnxruntime' runs fp32 only; precision is {precision!r}. Use precision='fp32', or "
            "runtime='openvino' or 'torch' for bf16."
        )
    return name


def training_precision(precision: str, device: torch.device | str) -> str:
    """The Lightning precision a training run on ``device`` uses (``resolve_precision`` for "train")."""
    return lightning_precision(resolve_precision(precision, device, "train"))


@contextlib.contextmanager
def inference_context(device: torch.device, precision: str) -> Iterator[None]:
    """``torch.inference_mode`` plus autocast to bf16/fp16 when ``precision`` asks for it."""
    with torch.inference_mode():
        if precision in _DTYPES:
            with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
                yield
        else:
            yield


def describe(device: torch.device, precision: str, runtime: str | None = None) -> str:
    """One line naming the device and precision (and the extraction runtime), for logs and benchmarks."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
        name += ", native bf16)" if cpu_has_fast_bf16() else ")"
    line = f"{name}, precision={precision}, torch {torch.__version__}"
    if runtime in ("openvino", "onnxruntime"):
        from importlib.metadata import PackageNotFoundError, version

        with contextlib.suppress(PackageNotFoundError):
            runtime = f"{runtime} {version(runtime)}"
    return line + (f", runtime={runtime}" if runtime else "")


def _is_strided_depthwise(m: torch.nn.Module) -> bool:
    return (isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
            and max(m.stride) > 1)


@contextlib.contextmanager
def fp32_strided_depthwise(model: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """Run ``model``'s strided depthwise convolutions in fp32 inside a CPU bf16 autocast region.

    Why: on the CPU (oneDNN, torch 2.15, AVX512-BF16/AMX) the backward pass of a stride-2
    depthwise convolution is 2.5-3x slower in bf16 than in fp32 (16x48x113x113, 3x3: 25-29 ms
    against 8-11 ms), and in MobileNet v1 the four such layers took 85 of the 126 ms per step spent
    in convolution backward (benchmarks/train.py; profile in the closing note of issue 3). Every
    other layer keeps bf16. fp32 is the more exact choice, so accuracy can only gain.

    Patches the modules' ``forward`` on the instances (the state_dict is unchanged) and restores
    them on exit; yields how many layers were patched.
    """
    patched = [m for m in model.modules() if _is_strided_depthwise(m)] if enabled else []
    for m in patched:
        cls_forward = type(m).forward

        def forward(x: torch.Tensor, _m: torch.nn.Module = m, _f=cls_forward) -> torch.Tensor:
            with torch.autocast(device_type="cpu", enabled=False):
                return _f(_m, x.float())

        m.forward = forward
    try:
        yield len(patched)
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)


@dataclass(frozen=True)
class CacheLayout:
    """The on-disk cache: ``features/`` (feature store), ``decoded/`` (uint8 images), ``compiled/``
    (ONNX graphs of the extraction runtimes), ``runs/``.

    ``decoded`` is shared by everything that decodes a dataset at a backbone's input size (the
    feature store and the network strategies): the files are keyed by the dataset's fingerprint,
    the size and the interpolation, so a run that needs the same images reads the same file.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def decoded(self) -> Path:
        return self.root / "decoded"

    @property
    def compiled(self) -> Path:
        return self.root / "compiled"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @classmethod
    def default(cls) -> CacheLayout:
        """``$TRANSFERKIT_CACHE``, else ``~/.cache/transferkit``."""
        return cls(Path(os.environ.get("TRANSFERKIT_CACHE") or Path.home() / ".cache" / "transferkit"))

    @classmethod
    def of(cls, cache_dir: str | os.PathLike[str] | None) -> CacheLayout:
        """The layout rooted at ``cache_dir``, or the default one when it is None (``--cache-dir``)."""
        return cls.default() if cache_dir is None else cls(Path(cache_dir))

    @classmethod
    def from_store_dir(cls, store_dir: str | os.PathLike[str]) -> CacheLayout:
        """The layout whose ``features`` folder is ``store_dir`` (callers that were given only a store)."""
        return cls(Path(store_dir).parent)
