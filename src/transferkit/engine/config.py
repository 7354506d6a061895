"""What determines a training run: ``TrainConfig`` (validated on construction) and its freezing rule."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..runtime import lightning_precision

OPTIMIZERS = ("adamw", "sgd")
BN_POLICIES = ("eval", "frozen", "train")
CLASS_WEIGHTS = ("none", "balanced")
SELECTION_METRICS = ("accuracy", "balanced_accuracy")
HEAD = "head"


def _fmt_set(values: tuple[str, ...]) -> str:
    return "{" + ",".join(f"'{v}'" for v in values) + "}"


@dataclass
class TrainConfig:
    """Everything that determines a training run (besides the data and the initial weights).

    ``lr`` is the head's learning rate; pretrained body groups get ``lr * body_lr_ratio``.
    ``freeze_stages=k`` freezes the stem and stages 1..k for the whole run (0: nothing frozen);
    ``freeze_until`` names the last frozen group instead ("stem", "stage2", "top", ...).
    ``head_epochs`` (full fine-tuning) trains the head alone for that many epochs first.
    ``warmup_epochs``: the learning rates rise linearly from near 0 over that many epochs, then
    follow a cosine to 0 (a probe-started network is knocked over by full-lr AdamW steps on its
    body: first-epoch training loss 2.11 without warm-up, 0.48 with one epoch of it, breastmnist).
    ``class_weight="balanced"`` weighs the loss per class (``engine.balance``);
    ``selection_metric`` is what picks the best epoch ("balanced_accuracy" for imbalanced data).
    ``precision``: "auto" | "fp32" | "bf16" | "fp16" (see ``transferkit.runtime``), stored under
    Lightning's name ("auto" | "32-true" | "bf16-mixed" | "16-mixed"), which is also accepted: the
    configuration is saved in checkpoints and run directories, and a resume compares it field by field.
    """

    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    body_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    flip: bool = True
    # Smallest share of the image a random resized crop keeps. 0.5 suits photos; glyphs such as
    # digits lose their identity when half is cropped away, so studies on them raise it.
    crop_scale: float = 0.5
    precision: str = "auto"
    grad_accum: int = 1
    early_stopping_patience: int | None = None
    seed: int = 0
    freeze_stages: int = 0
    freeze_until: str | None = None
    bn_policy: str = "frozen"
    head_epochs: int = 0
    num_workers: int = 0
    class_weight: str = "none"
    selection_metric: str = "accuracy"

    def __post_init__(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum:
                raise ConfigError(f"The '{name}' parameter must be an integer >= {minimum}. Got {v!r} instead.")

        def number(name: str, lo: float, hi: float, lo_open: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, int | float | np.floating) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
            if not ok:
                lo_s = f"> {lo}" if lo_open else f">= {lo}"
                raise ConfigError(f"The '{name}' parameter must be a number {lo_s} and <= {hi}. Got {v!r} instead.")

        def choice(name: str, options: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in options:
                raise ConfigError(f"The '{name}' parameter must be one of {_fmt_set(options)}. Got {v!r} instead.")

        self.precision = lightning_precision(self.precision)
        positive_int("epochs")
        positive_int("batch_size")
        positive_int("grad_accum")
        positive_int("seed", 0)
        positive_int("freeze_stages", 0)
        positive_int("head_epochs", 0)
        positive_int("num_workers", 0)
        choice("optimizer", OPTIMIZERS)
        choice("bn_policy", BN_POLICIES)
        choice("class_weight", CLASS_WEIGHTS)
        choice("selection_metric", SELECTION_METRICS)
        number("lr", 0.0, 10.0, lo_open=True)
        number("body_lr_ratio", 0.0, 10.0)
        number("weight_decay", 0.0, 1.0)
        number("warmup_epochs", 0.0, float(self.epochs))
        number("label_smoothing", 0.0, 0.99)
        number("crop_scale", 0.05, 1.0)
        for name in ("augment", "flip"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"The '{name}' parameter must be True or False. Got {getattr(self, name)!r} instead.")
        if self.early_stopping_patience is not None:
            positive_int("early_stopping_patience")
        if self.head_epochs >= self.epochs:
            raise ConfigError(
                f"The 'head_epochs' parameter ({self.head_epochs}) must be smaller than 'epochs' "
                f"({self.epochs}): the body is unfrozen after the head-only epochs."
            )
        if self.freeze_until is not None and not isinstance(self.freeze_until, str):
            raise ConfigError(
                f"The 'freeze_until' parameter must be a layer name such as 'stage2'. "
                f"Got {self.freeze_until!r} instead."
            )
        if self.freeze_until is not None and self.freeze_stages:
            raise ConfigError(
                "Give either 'freeze_stages' or 'freeze_until', not both "
                f"(got freeze_stages={self.freeze_stages}, freeze_until={self.freeze_until!r})."
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> TrainConfig:
        """Build from a strategy's params dict, ignoring keys that are not TrainConfig fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in {**params, **overrides}.items() if k in names}
        return cls(**kw)

    def frozen_count(self, group_names: list[str]) -> int:
        """How many leading body groups are frozen for the whole run."""
        body = [n for n in group_names if n != HEAD]
        if self.freeze_until is not None:
            if self.freeze_until not in body:
                raise ConfigError(
                    f"The 'freeze_until' parameter must be one of {_fmt_set(tuple(body))}. "
                    f"Got {self.freeze_until!r} instead."
                )
            return body.index(self.freeze_until) + 1
        if self.freeze_stages == 0:
            return 0
        stages = [n for n in body if n.startswith("stage")]
        if self.freeze_stages > len(stages):
            raise ConfigError(
                f"The 'freeze_stages' parameter must be between 0 and {len(stages)} for this backbone "
                f"(stages: {', '.join(stages)}). Got {self.freeze_stages} instead."
            )
        return body.index(stages[self.freeze_stages - 1]) + 1

    def frozen_groups(self, group_names: list[str], epoch: int) -> list[str]:
        """The body groups frozen during ``epoch`` (0-based): a pure function of the config."""
        body = [n for n in group_names if n != HEAD]
        if epoch < self.head_epochs:
            return body
        return body[: self.frozen_count(group_names)]
