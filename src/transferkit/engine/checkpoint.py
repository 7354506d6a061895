"""Checkpoints: one directory per completed epoch, written atomically; RNG state; resume checks.

``run_dir/checkpoints/epoch_NNNN`` is built under a temporary name and renamed into place, then
``checkpoints/latest.json`` is replaced atomically (kill points ``engine.checkpoint.tmp_written``
and ``engine.checkpoint.renamed`` fire between those steps). A resume refuses a checkpoint whose
configuration or parameter groups differ from the run's (:func:`check_resumable`).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, StoreError
from ..io import atomic_write_json, is_no_space, kill_point, read_json
from .config import TrainConfig

DEFAULT_CONFIG = TrainConfig().to_dict()

CHECKPOINT_FORMAT = 1


def state_to_cpu(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """``run_dir/checkpoints/epoch_NNNN/`` {model, best}.safetensors + state.pt + meta.json.

    Each epoch directory is built under a temporary name and renamed into place, then
    ``latest.json`` is replaced atomically; older epoch directories are removed afterwards.
    ``state.pt`` (optimizer, scheduler, RNG) holds only tensors and plain containers and is read
    with ``torch.load(weights_only=True)``.
    """

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "checkpoints"

    def latest(self) -> Path | None:
        pointer = self.dir / "latest.json"
        if pointer.exists():
            path = self.dir / read_json(pointer)["dir"]
            if (path / "meta.json").exists():
                return path
        done = sorted(p for p in self.dir.glob("epoch_*") if (p / "meta.json").exists())
        return done[-1] if done else None

    def save(self, epoch: int, model_state, best_state, best_changed: bool, state: dict, meta: dict) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"epoch_{epoch:04d}"
        final = self.dir / name
        tmp = self.dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        prev = self.latest()
        try:
            tmp.mkdir()
            _save_tensors(tmp / "model.safetensors", model_state)
            if best_state is not None:
                if not best_changed and prev is not None and (prev / "best.safetensors").exists():
                    shutil.copyfile(prev / "best.safetensors", tmp / "best.safetensors")
                else:
                    _save_tensors(tmp / "best.safetensors", best_state)
            # Through memory: torch.save into a file on a full disk hides ENOSPC behind
            # "unexpected pos"; a plain write reports it.
            buf = io.BytesIO()
            torch.save(state, buf)
            (tmp / "state.pt").write_bytes(buf.getbuffer())
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=_jsonable))
            for f in tmp.iterdir():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, Exception) and is_no_space(exc):
                raise StoreError(
                    f"No space left on device while writing the checkpoint of epoch {epoch} in {self.dir}; "
                    f"the previous checkpoint ({prev.name if prev else 'none yet'}) is intact. Free some disk "
                    "space and run the same command again with resume."
                ) from exc
            raise
        kill_point("engine.checkpoint.tmp_written")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        kill_point("engine.checkpoint.renamed")
        atomic_write_json(self.dir / "latest.json", {"dir": name, "epoch": epoch})
        for old in self.dir.glob("epoch_*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def load(path: Path) -> tuple[dict, dict, dict | None, dict]:
        from safetensors.torch import load_file

        try:
            meta = read_json(path / "meta.json")
            model_state = load_file(str(path / "model.safetensors"))
            best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").exists() else None
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise StoreError(
                f"Checkpoint {path} cannot be read ({exc}). Delete {path.parent} to start the run afresh."
            ) from exc
        return meta, model_state, best, state


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def check_resumable(meta: dict, cfg: dict, groups, path: Path) -> None:
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(f"Checkpoint {path} has format {meta.get('format')}, expected {CHECKPOINT_FORMAT}.")
    # A field the checkpoint predates compares as its default (what the run then trained with).
    saved = {**DEFAULT_CONFIG, **meta["config"]}
    diff = {k: (saved.get(k), v) for k, v in cfg.items() if saved.get(k) != v}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ConfigError(
            f"Cannot resume from {path}: the training configuration changed ({shown}). "
            "Use the same settings, or start a new run directory."
        )
    saved = [(g["name"], g["num_params"]) for g in meta["param_groups"]]
    now = [(n, sum(p.numel() for p in ps)) for n, ps in groups]
    if saved != now:
        raise StoreError(
            f"Cannot resume from {path}: its parameter groups {saved} do not match the model's {now}. "
            "Was the backbone or the head changed? Start a new run directory."
        )
