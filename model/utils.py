"""Small helpers shared by the model code, its jobs and its tests; ``seed_everything`` is the one seeding helper."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses started from here
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def num_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def run_layer(layer: nn.Module, recompute: bool, *args, **kwargs):
    """``layer(*args, **kwargs)``; with ``recompute`` in training, as an activation checkpoint: only the inputs are
    kept for backward, which runs the layer's forward again (same dropout masks: the RNG state is replayed)."""
    if recompute and layer.training and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False, **kwargs)
    return layer(*args, **kwargs)


def load_exactly(module: nn.Module, state: dict[str, torch.Tensor], what: str, mine: str) -> None:
    """Load ``state`` into ``module`` if every tensor fits; else a ``ValueError`` that starts with ``what`` and names
    the first tensors of another shape (beside ``mine``'s shape), missing or unexpected."""
    own = module.state_dict()
    shapes = [f"{k} {list(v.shape)} ({mine}: {list(own[k].shape)})" for k, v in state.items()
              if k in own and v.shape != own[k].shape]  # fmt: skip
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if shapes or missing or unexpected:
        raise ValueError(f"{what}: shapes {shapes[:4]}, missing {missing[:6]}, unexpected {unexpected[:6]}")
    module.load_state_dict(state)
