"""Training checkpoints (DESIGN section 8): one self-contained file per save, loadable with ``weights_only=True``.

A checkpoint holds everything an exact resume needs and everything evaluation needs, so a single file can be copied
off a cluster and used on its own:

- ``model``, ``optimizer``, ``scheduler``: state dicts (the model's without a DDP ``module.`` prefix);
- ``step``: optimizer steps done; ``loader``: one ``StreamingLoader.state_dict()`` per rank (JSON text);
- ``rng``: Python, NumPy and torch (CPU and CUDA) generator states, as tensors and plain values;
- ``config``: the resolved run config as JSON text (``{"train": ..., "model": ...}``);
- ``tokenizer``: the run's ``tokenizer.json`` text.

Only tensors, numbers, strings, lists and dicts are stored, so ``torch.load(weights_only=True)`` reads it and
loading a checkpoint never runs pickled code. Files are written to a temporary name and renamed, so a crash mid-save
leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from model.config import COPAConfig, from_dict
from model.copa import COPA
from model.tokenizer import CaptionTokenizer

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_RE = re.compile(r"step-(\d{8})\.pt")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if CHECKPOINT_RE.fullmatch(p.name))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(path: str | Path, state: dict, keep: int = 0) -> Path:
    """Write ``state`` atomically to ``path``; with ``keep`` > 0, delete all but the newest ``keep`` in its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    if keep > 0:
        for old in list_checkpoints(path.parent.parent)[:-keep]:
            old.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if path.is_dir():  # a run folder: its latest checkpoint
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no {CHECKPOINT_DIR}/step-NNNNNNNN.pt in this run folder")
        path = found
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # an object other than tensors and plain containers: never unpickled
        raise ValueError(f"{path}: refused, it holds objects that only a full unpickle would build ({err})") from err
    except (RuntimeError, EOFError, KeyError) as err:  # torch's errors for a truncated or foreign file
        raise ValueError(f"{path}: not a readable checkpoint, truncated or another format ({err!r})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a COPA training checkpoint (it holds a {type(state).__name__})")
    missing = {"model", "step", "config", "tokenizer"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a COPA training checkpoint (missing {sorted(missing)})")
    state["path"] = str(path)
    return state


def model_config(state: dict) -> COPAConfig:
    return from_dict(COPAConfig, json.loads(state["config"])["model"], f"{state.get('path', 'checkpoint')}: model")


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy_keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_pos": int(numpy_state[2]),
        "numpy_gauss": [int(numpy_state[3]), float(numpy_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(
        ("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss, cached)
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model(state: dict, device: str | torch.device = "cpu") -> tuple[COPA, CaptionTokenizer]:
    """The trained model (in eval mode) and its tokenizer, from a loaded checkpoint."""
    cfg = model_config(state)
    model = COPA(cfg)
    model.load_state_dict(state["model"])
    tokenizer = CaptionTokenizer.from_str(state["tokenizer"], cfg.text.max_len)
    return model.to(device).eval(), tokenizer
