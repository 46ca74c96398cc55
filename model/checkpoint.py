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

import dataclasses
import json
import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch
from timm.layers import resample_abs_pos_embed

from model.config import COPAConfig, from_dict
from model.copa import COPA
from model.tokenizer import CaptionTokenizer
from model.utils import load_exactly

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
    """A checkpoint file, a run folder (its latest checkpoint) or an exported model folder (``export_model``), as
    the dict a checkpoint file holds (an export has no optimizer, loader or RNG state: it cannot resume)."""
    path = Path(path)
    if path.is_dir() and (path / EXPORT_WEIGHTS).is_file():
        return read_export(path, map_location)
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


def load_weights(model: COPA, weights: dict[str, torch.Tensor], source: str) -> None:
    """Start ``model`` from another model's weights (fine-tuning): every tensor must fit, except the ViT position
    embeddings, which are resampled to this model's grid (bicubic, antialiased: timm's ``resample_abs_pos_embed``)
    when the weights were trained at another image size, e.g. a 256 px checkpoint fine-tuned at 384 px."""
    own = model.state_dict()
    weights = dict(weights)
    for key, value in weights.items():
        if key.endswith("vit.pos_embed") and key in own and value.shape != own[key].shape:
            grid = model.cfg.vision.grid_size
            weights[key] = resample_abs_pos_embed(value, (grid, grid), num_prefix_tokens=1)
    load_exactly(model, weights, f"{source}: its weights do not fit the configured model", "this model")


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
    cfg = without_initial_weights(model_config(state))  # the state holds every weight; the start files may be gone
    model = COPA(cfg)
    model.load_state_dict(state["model"])
    tokenizer = CaptionTokenizer.from_str(state["tokenizer"], cfg.text.max_len)
    return model.to(device).eval(), tokenizer


# ---- exported models: config.json, model.safetensors, tokenizer.json, README.md ------------------------------------

EXPORT_CONFIG, EXPORT_WEIGHTS, EXPORT_README = "config.json", "model.safetensors", "README.md"
EXPORT_FORMAT = "copa-model/1"


def without_initial_weights(cfg: COPAConfig) -> COPAConfig:
    """``cfg`` without the pretrained files training started from (a saved model holds its own weights)."""
    return dataclasses.replace(
        cfg,
        vision=dataclasses.replace(cfg.vision, checkpoint=None),
        text=dataclasses.replace(cfg.text, bert_dir=None),
    )


def export_model(state: dict, out: str | Path) -> Path:
    """Write a training checkpoint as a self-describing folder: ``config.json`` (the full model config, the
    training settings and the step), ``model.safetensors`` (every weight and buffer, momentum towers and queues
    included, so training can go on from it), ``tokenizer.json`` and a ``README.md`` with the training facts.
    No pickles: ``load_checkpoint``/``COPA.from_pretrained`` read it back exactly. Written to a temporary folder and
    renamed into place."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty")
    config = json.loads(state["config"])
    model = dataclasses.asdict(without_initial_weights(model_config(state)))
    started = {
        "vision_weights": config["model"]["vision"]["checkpoint"],
        "text_weights": config["model"]["text"]["bert_dir"],
    }
    document = {"format": EXPORT_FORMAT, "step": int(state["step"]), "model": model, "train": config["train"]}
    document["initial_weights"] = started
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    tmp.mkdir(parents=True, exist_ok=False)
    (tmp / EXPORT_CONFIG).write_text(json.dumps(document, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in state["model"].items()}, str(tmp / EXPORT_WEIGHTS))
    CaptionTokenizer.from_str(state["tokenizer"]).save(str(tmp))
    (tmp / EXPORT_README).write_text(export_readme(document, state["path"]))
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def export_readme(document: dict, source: str) -> str:
    t, m = document["train"], document["model"]
    v, x = m["vision"], m["text"]
    return (
        "# COPA model\n\n"
        f"Exported from `{source}` after {document['step']} optimizer steps (`copa export`).\n\n"
        f"- image tower: {v['model_name'] or 'timm ViT'}, {v['img_size']} px, patch {v['patch_size']}, width "
        f"{v['embed_dim']}, depth {v['depth']}; detector before block(s) {v['detect_layers']} keeping "
        f"{v['keep_ratios']}\n"
        f"- text towers: {x['text_layers']} text + {x['fusion_layers']} fusion layers, {x['decoder_layers']}-layer "
        f"decoder, width {x['hidden']}, vocabulary {x['vocab_size']}\n"
        f"- started from: {document['initial_weights']}\n"
        f"- trained on `{t['shards']}`, batch {t['batch_size']} x accum {t['accum']} per process, peak lr {t['lr']}, "
        f"seed {t['seed']}\n\n"
        "Files: `config.json` (every setting), `model.safetensors` (weights), `tokenizer.json`. Load with\n"
        "`COPA.from_pretrained(folder)` (model) and `CaptionTokenizer.from_dir(folder)`; every `copa` command that\n"
        "takes `--checkpoint` takes this folder.\n"
    )


def read_export(folder: Path, map_location: str | torch.device = "cpu") -> dict:
    """An exported folder as a checkpoint dict (model, step, config, tokenizer, path)."""
    from safetensors.torch import load_file

    try:
        document = json.loads((folder / EXPORT_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{folder / EXPORT_CONFIG}: not a readable exported model config ({err})") from err
    if document.get("format") != EXPORT_FORMAT:
        raise ValueError(
            f"{folder / EXPORT_CONFIG}: format {document.get('format')!r}, this toolkit reads {EXPORT_FORMAT}"
        )
    return {
        "model": load_file(str(folder / EXPORT_WEIGHTS), device=str(map_location)),
        "step": document["step"],
        "config": json.dumps({"model": document["model"], "train": document["train"]}),
        "tokenizer": CaptionTokenizer.from_dir(str(folder)).to_str(),
        "path": str(folder),
    }
