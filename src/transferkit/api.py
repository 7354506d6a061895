"""``TransferClassifier``: the scikit-learn style entry point, and run directories.

    clf = TransferClassifier(backbone="mobilenetv1_075.keras_in1k.json", strategy="linear")
    clf.fit("data/hymenoptera", run_dir="runs/linear")   # trains on train/, scores on val/
    clf.score("data/hymenoptera")                         # accuracy on the held-out split
    TransferClassifier.load("runs/linear").predict(["some.jpg"])

``__init__`` only stores parameters; they are validated in ``fit``. Fitted attributes end
in ``_``. Using the model before ``fit`` raises ``NotFittedError`` saying what to call.

Which images play which role is decided once, in ``data/roles.py``, and written into the run directory:
- *train*: what the model learns from;
- *val*: model selection and early stopping (the dataset's own val split when it also has a
  test split; otherwise a stratified ``val_fraction`` of train);
- *scored*: the held-out split every reported accuracy comes from (test if present, else
  val). It is never used to choose anything.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .data.roles import Roles, scored_split_name, split_roles
from .data.roles import stratified_holdout as stratified_holdout  # re-exported: callers import it from here
from .errors import ConfigError, DataError, NotFittedError
from .io import atomic_write_json, read_json
from .metrics import classification_metrics

# The roles are decided in data/roles.py; the old name stays importable from here.
SplitRoles = Roles

RUN_CONFIG = "config.json"
RUN_METRICS = "metrics.json"
RUN_HISTORY = "history.json"
RUN_VERSIONS = "versions.json"
MODEL_DIR = "model"



def default_cache_dir() -> Path:
    """Where features and decoded images are cached: $TRANSFERKIT_CACHE or ~/.cache/transferkit."""
    from .runtime import CacheLayout

    return CacheLayout.default().root


def library_versions() -> dict[str, str]:
    import PIL
    import sklearn
    import timm
    import torch

    return {"transferkit": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__, "platform": platform.platform()}


class TransferClassifier:
    """Fit a classifier on a new image dataset by transferring a pretrained CNN.

    Parameters
    ----------
    backbone : a timm name, a backbone card (.json), a directory made by ``transferkit pretrain``,
        ``alexnet`` or ``googlenet``; or an already built ``Backbone``.
    strategy : a registered strategy (``transferkit strategies``), or auto: the advisor's measurements,
        every feature-store candidate cross-validated, fine-tuning trials within ``budget``.
    layer : cut point for ``intermediate`` (``stage3``...); ``None`` picks the best by CV on train.
    hidden : widths of hidden fully connected layers (``intermediate`` / ``hidden``).
    epochs, lr, batch_size, freeze_stages : training settings for the fine-tuning strategies;
        ``None`` keeps the strategy's default.
    params : any further strategy parameters (``freeze_until``, ``dropout``, ``body_lr_ratio``...).
    device : "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N".
    precision : "auto" (bf16 where measured to keep accuracy), "bf16" or "fp32".
    cache_dir : feature store and decoded-image cache; default ``default_cache_dir()``.
    val_fraction : share of train held back for model selection when the data has no own val split.
    budget : ``auto`` only: minutes its fine-tuning trials may take (default
        ``advisor.select.DEFAULT_BUDGET_S``); the feature-store candidates are always scored.
    """

    def __init__(self, backbone: Any, strategy: str = "linear", *, layer: str | None = None,
                 hidden: tuple[int, ...] | list[int] = (), epochs: int | None = None, lr: float | None = None,
                 batch_size: int | None = None, freeze_stages: int | None = None,
                 params: dict[str, Any] | None = None, device: str = "auto", precision: str = "auto",
                 cache_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.15,
                 progress: bool = True, budget: float | None = None):
        self.backbone = backbone
        self.strategy = strategy
        self.layer = layer
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.freeze_stages = freeze_stages
        self.params = params
        self.device = device
        self.precision = precision
        self.cache_dir = cache_dir
        self.seed = seed
        self.val_fraction = val_fraction
        self.progress = progress
        self.budget = budget

    # ------------------------------------------------------------------------------ fit
    def fit(self, data: Any, *, run_dir: str | Path | None = None, resume: bool = False,
            roles: Roles | None = None) -> TransferClassifier:
        """Train on ``data`` (a path, a built-in name such as ``digits``, or an ``ImageDataset``).

        With ``run_dir`` the run is written there (configuration, versions, model, history,
        metrics on the held-out split) and can be reloaded with ``TransferClassifier.load``.
        ``resume=True`` continues an interrupted run in ``run_dir``. ``roles`` overrides which
        images train, select and are scored (``split_roles`` decides by default); studies such as
        data-size curves use it to train on a subset while features stay shared.
        """
        from .strategies import get_strategy

        self._validate()
        dataset = as_dataset(data, seed=self.seed)
        backbone = self._backbone()
        roles = roles or split_roles(dataset, self.val_fraction, self.seed)
        run_path = Path(run_dir) if run_dir is not None else None
        if resume and run_path is None:
            raise ConfigError("resume=True needs the run_dir of the interrupted run.")
        work_dir = run_path or self._cache().runs / f"tmp-{os.getpid()}-{time.time_ns()}"
        work_dir.mkdir(parents=True, exist_ok=True)

        selection = None
        strategy_name, planned = self.strategy, {}
        if self.strategy == "auto":
            selection = self._select(dataset, backbone, roles, work_dir, resume=resume, trials=True)
            strategy_name, planned = selection.strategy, selection.params
        params, ignored = self._params_for(strategy_name, planned)
        strategy = get_strategy(strategy_name)

        self.backbone_ = backbone
        self.classes_ = list(dataset.classes)
        self.strategy_ = strategy_name
        self.params_ = params
        self.ignored_params_ = ignored
        self.split_ = roles.describe(dataset)
        self.data_ = {"path": str(dataset.root), "name": dataset.name, "fingerprint": dataset.fingerprint,
                      "n_images": len(dataset), "classes": list(dataset.classes),
                      "counts": {k: int(v) for k, v in dataset.class_counts().items()},
                      "skipped": [list(s) for s in dataset.skipped]}
        self.advice_ = selection.to_dict() if selection is not None else None
        if run_path is not None:
            self._write_config(run_path)

        if selection is not None and selection.model is not None:
            # A network strategy won its budgeted trial: that trained network is the model.
            trial = next(t for t in selection.trials if t.model is selection.model)
            self.model_, self.history_, self.fit_seconds_ = trial.model, list(trial.history), trial.seconds
        else:
            ctx = self._context(backbone, dataset, roles, params, work_dir, resume=resume)
            start = time.perf_counter()
            self.model_ = strategy.fit(ctx)
            self.history_ = list(ctx.history)
            self.fit_seconds_ = time.perf_counter() - start
        # per-image predictions on the scored images: studies pair strategies image by image on them
        self.scored_pred_ = self._predict_indices(dataset, roles.scored) if len(roles.scored) else \
            np.zeros(0, np.int64)
        self.metrics_ = classification_metrics(dataset.labels[roles.scored], self.scored_pred_, self.classes_) \
            if len(roles.scored) else {}
        if self.metrics_:
            self.metrics_["split"] = self.split_["scored"]
        if run_path is not None:
            self.save(run_path)
        return self

    def _validate(self) -> None:
        from .strategies import get_strategy

        if self.strategy != "auto":
            get_strategy(self.strategy)  # raises with the list of valid names
        from .runtime import canonical_precision

        canonical_precision(self.precision)  # one vocabulary (runtime.PRECISIONS); raises naming it
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | np.integer) or value < 1):
                raise ConfigError(f"The {name!r} parameter must be a positive integer. Got {value!r} instead.")
        if self.lr is not None and not (isinstance(self.lr, float | int) and 0 < self.lr < 10):
            raise ConfigError(f"The 'lr' parameter must be a positive number below 10. Got {self.lr!r} instead.")
        if self.freeze_stages is not None and (not isinstance(self.freeze_stages, int) or self.freeze_stages < 0):
            raise ConfigError("The 'freeze_stages' parameter must be a non-negative integer. "
                              f"Got {self.freeze_stages!r} instead.")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int | float)
                                        or not self.budget >= 0):
            raise ConfigError(f"The 'budget' parameter must be a number of minutes >= 0. Got {self.budget!r} instead.")
        if not 0.0 <= float(self.val_fraction) < 0.9:
            raise ConfigError(f"The 'val_fraction' parameter must be in [0, 0.9). Got {self.val_fraction!r}.")
        hidden = tuple(self.hidden or ())
        if any(not isinstance(h, int | np.integer) or h < 1 for h in hidden):
            raise ConfigError(f"The 'hidden' parameter must be positive layer widths such as (512, 256). "
                              f"Got {self.hidden!r} instead.")

    def _backbone(self):
        from .backbones import load_backbone

        if hasattr(self.backbone, "forward_layers"):
            return self.backbone
        return load_backbone(self.backbone)

    def _cache(self) -> Path:
        from .runtime import CacheLayout

        return CacheLayout.of(self.cache_dir)

    def _explicit(self) -> dict[str, Any]:
        """The settings the caller gave (constructor arguments that are set, plus ``params``)."""
        explicit = {"layer": self.layer, "hidden": tuple(self.hidden or ()), "epochs": self.epochs, "lr": self.lr,
                    "batch_size": self.batch_size, "freeze_stages": self.freeze_stages}
        explicit = {k: v for k, v in explicit.items() if v not in (None, ())}
        explicit.update(self.params or {})
        return explicit

    def _params_for(self, name: str, planned: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the parameters strategy ``name`` gets, the explicit settings it ignores).

        The strategy's defaults, then what ``auto`` planned, then the caller's explicit settings. A
        setting the strategy does not read (``epochs`` for ``linear``, a ``batch_size`` given for
        whatever ``auto`` picks) is not passed on; the run records it as ignored.
        """
        from .strategies import get_strategy

        declared = get_strategy(name).defaults
        explicit = self._explicit()
        ignored = {k: v for k, v in explicit.items() if k not in declared}
        return {**declared, **planned, **{k: v for k, v in explicit.items() if k in declared}}, ignored

    def plan(self, data: Any, *, roles: Roles | None = None):
        """What ``auto`` would choose for ``data``, without training anything but feature-store heads.

        Returns an ``advisor.select.Selection``: the advisor's measurements and the four-case table,
        every feature-store candidate's cross-validated score with its spread, the decision and
        why, and the fine-tuning trials ``fit`` would run (with their estimated cost), not run.
        """
        self._validate()
        dataset = as_dataset(data, seed=self.seed)
        roles = roles or split_roles(dataset, self.val_fraction, self.seed)
        work_dir = self._cache().runs / f"plan-{os.getpid()}-{time.time_ns()}"
        return self._select(dataset, self._backbone(), roles, work_dir, resume=False, trials=False)

    def _context(self, backbone, dataset, roles: Roles, params: dict[str, Any], where: Path, *,
                 keep_going=None, resume: bool = False):
        from .strategies import FitContext

        return FitContext(backbone=backbone, dataset=dataset, train_idx=roles.train, val_idx=roles.val,
                          monitor_idx=roles.scored, params=params, run_dir=where, cache=self._cache(),
                          device=self.device, precision=self.precision, seed=self.seed,
                          progress=self.progress, resume=resume, keep_going=keep_going)

    def _select(self, dataset, backbone, roles: Roles, work_dir: Path, *, resume: bool, trials: bool):
        """``auto``: measure (the advisor), then the budgeted selection (``advisor.select``)."""
        from .advisor import advise
        from .advisor.select import select

        # The advisor measures exactly the images the strategy will train on.
        advice = advise(dataset, backbone, roles=roles, store_dir=self._cache().features, device=self.device,
                        seed=self.seed, progress=self.progress)
        advised = advice.strategy_params()

        def make_ctx(name: str, epochs: int | None = None, keep_going=None, resume_trial: bool = resume):
            # Each trial trains in its own folder of the run, so a continued rung (or a resumed run)
            # picks up its checkpoint.
            params, _ = self._params_for(name, dict(advised) if name == advice.strategy else {})
            if epochs is not None and "epochs" in params:
                params["epochs"] = int(epochs)
            where = work_dir / "trials" / name
            return self._context(backbone, dataset, roles, params, where, keep_going=keep_going,
                                 resume=resume_trial)

        return select(advice, make_ctx=make_ctx, epochs=self.epochs, trials=trials, seed=self.seed,
                      budget_s=None if self.budget is None else 60.0 * float(self.budget))

    # ------------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("This TransferClassifier is not fitted yet. Call fit(data) first, or "
                                 "TransferClassifier.load(run_dir) to use a finished run.")

    def images(self, X: Any) -> np.ndarray:
        """uint8 (N, 3, H, W) images at the backbone's input size from a dataset, paths or an array."""
        self._check_fitted()
        pre = self.backbone_.preprocessing
        size = tuple(pre.input_size[1:])
        if isinstance(X, np.ndarray):
            if X.dtype != np.uint8 or X.ndim != 4 or X.shape[1] != 3 or tuple(X.shape[2:]) != size:
                raise DataError(f"An image array must be uint8 of shape (N, 3, {size[0]}, {size[1]}); "
                                f"got {X.dtype} {X.shape}. Pass file paths instead to have them resized.")
            return X
        if hasattr(X, "decode"):
            return X.decode(size, pre.interpolation, cache_dir=self._cache().decoded)
        from .data import load_image_uint8

        paths = [X] if isinstance(X, str | Path) else list(X)
        return np.stack([load_image_uint8(p, size, pre.interpolation) for p in paths]) if paths else \
            np.zeros((0, 3, *size), np.uint8)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, C), columns in the order of ``classes_``."""
        images = self.images(X)
        return self.model_.predict_proba(images, batch_size=self.batch_size or 64)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class names."""
        self._check_fitted()
        return np.asarray(self.classes_)[self.predict_proba(X).argmax(axis=1)]

    def evaluate(self, data: Any, split: str | None = None) -> dict[str, Any]:
        """Metrics on ``split`` of ``data`` (default: its held-out split, test if present else val)."""
        self._check_fitted()
        dataset = as_dataset(data, seed=self.seed)
        dataset = self._aligned(dataset)
        name = split or scored_split_name(dataset)
        if name == "all":
            idx = np.arange(len(dataset))
        else:
            if not dataset.has_split(name):
                raise DataError(f"{dataset.root} has no {name!r} split; it has "
                                f"{sorted(set(dataset.splits.tolist()))}.")
            idx = np.flatnonzero(dataset.splits == name)
        metrics = self._evaluate_indices(dataset, idx)
        metrics["split"] = {"name": name, "n": int(len(idx)), "fingerprint": dataset.fingerprint}
        return metrics

    def score(self, data: Any, split: str | None = None) -> float:
        """Accuracy on the held-out split of ``data`` (see ``evaluate``)."""
        return self.evaluate(data, split)["accuracy"]

    def _predict_indices(self, dataset, idx: np.ndarray) -> np.ndarray:
        images = self.images(dataset)[idx]
        proba = self.model_.predict_proba(np.ascontiguousarray(images), batch_size=self.batch_size or 64)
        return proba.argmax(axis=1)

    def _evaluate_indices(self, dataset, idx: np.ndarray) -> dict[str, Any]:
        return classification_metrics(dataset.labels[idx], self._predict_indices(dataset, idx), self.classes_)

    def _aligned(self, dataset):
        """``dataset`` with its labels expressed in this model's class order."""
        if list(dataset.classes) == self.classes_:
            return dataset
        unknown = sorted(set(dataset.classes) - set(self.classes_))
        if unknown:
            raise DataError(f"{dataset.root} has classes the model was not trained on: {unknown}. "
                            f"The model knows {self.classes_}.")
        from .data import align_classes

        return align_classes(dataset, self.classes_)

    # ---------------------------------------------------------------------- persistence
    def _write_config(self, run_dir: Path) -> None:
        bb = self.backbone_
        atomic_write_json(run_dir / RUN_CONFIG, {
            "strategy": self.strategy_, "requested_strategy": self.strategy, "params": self.params_,
            "backbone": {"spec": str(bb.spec), "name": bb.name, "arch": bb.arch, "pretrained": bb.pretrained,
                         "weights_hash": bb.weights_hash, "card": bb.card()},
            "ignored_params": self.ignored_params_,
            "classes": self.classes_, "seed": self.seed, "device": self.device, "precision": self.precision,
            "data": self.data_, "split": self.split_, "advice": self.advice_,
            # what the strategy resolved from the data (warm-up, BatchNorm policy, class weighting)
            "recipe": (getattr(getattr(self, "model_", None), "info", None) or {}).get("recipe"),
            "command": " ".join(sys.argv), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        atomic_write_json(run_dir / RUN_VERSIONS, library_versions())

    def save(self, run_dir: str | Path) -> Path:
        """Write the fitted run (config, versions, model, history, metrics) into ``run_dir``."""
        self._check_fitted()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config(run_dir)
        self.model_.save(run_dir / MODEL_DIR)
        atomic_write_json(run_dir / RUN_HISTORY, self.history_)
        atomic_write_json(run_dir / RUN_METRICS, {"strategy": self.strategy_, "fit_seconds": self.fit_seconds_,
                                                  "scored": self.metrics_})
        return run_dir

    @classmethod
    def load(cls, run_dir: str | Path, *, backbone: Any = None, device: str = "auto",
             cache_dir: str | Path | None = None, allow_outside_weights: bool = False) -> TransferClassifier:
        """Reload a finished run written by ``fit(..., run_dir=...)``."""
        from .backbones import load_backbone
        from .strategies import get_strategy

        run_dir = Path(run_dir)
        if not (run_dir / RUN_CONFIG).is_file() or not (run_dir / MODEL_DIR).is_dir():
            raise DataError(f"{run_dir} is not a finished transferkit run (no {RUN_CONFIG} and {MODEL_DIR}/). "
                            "Point at the directory given to `transferkit fit --out`.")
        config = read_json(run_dir / RUN_CONFIG)
        bb = backbone if hasattr(backbone, "forward_layers") else load_backbone(
            backbone or config["backbone"]["spec"], allow_outside_weights=allow_outside_weights,
            **reload_kwargs(config, explicit=backbone is not None))
        clf = cls(backbone=bb, strategy=config["strategy"], params=config.get("params"), device=device,
                  precision=config.get("precision", "auto"), cache_dir=cache_dir, seed=config.get("seed", 0),
                  progress=False)
        clf.backbone_ = bb
        clf.strategy_ = config["strategy"]
        clf.params_ = config.get("params", {})
        clf.classes_ = config["classes"]
        clf.split_ = config.get("split", {})
        clf.data_ = config.get("data", {})
        clf.advice_ = config.get("advice")
        clf.ignored_params_ = config.get("ignored_params", {})
        clf.model_ = get_strategy(config["strategy"]).load(run_dir / MODEL_DIR, bb)
        clf.history_ = read_json(run_dir / RUN_HISTORY) if (run_dir / RUN_HISTORY).is_file() else []
        metrics = read_json(run_dir / RUN_METRICS) if (run_dir / RUN_METRICS).is_file() else {}
        clf.metrics_ = metrics.get("scored", {})
        clf.fit_seconds_ = metrics.get("fit_seconds", float("nan"))
        return clf


def reload_kwargs(config: dict[str, Any], explicit: bool) -> dict[str, Any]:
    """How to rebuild the backbone a run used: random init with its seed, or its local weights file."""
    bcfg = config.get("backbone", {})
    if explicit:
        return {}
    if not bcfg.get("pretrained", True):
        return {"pretrained": False, "seed": config.get("seed", 0)}
    spec, weights = str(bcfg.get("spec", "")), (bcfg.get("card") or {}).get("weights")
    is_card = spec.endswith(".json") or Path(spec).is_dir()
    if weights and not is_card and Path(str(weights)).is_file():
        return {"weights": weights}
    return {}


# ---------------------------------------------------------------------------------- splits
def as_dataset(data: Any, seed: int = 0):
    from .data import load_dataset

    if hasattr(data, "decode") and hasattr(data, "labels"):
        return data
    return load_dataset(data, seed=seed)
