"""Typed configuration of the COPA model (Jiang et al., ACM MM 2023, arXiv 2308.03475), DESIGN section 7.

One dataclass per component, each validated in ``__post_init__`` with a ``ValueError`` that names the field.
Presets in ``model/presets.py`` return complete ``COPAConfig`` objects; callers override fields with
``dataclasses.replace`` (which re-runs the validation).

What the paper fixes: a ViT-B/16 (CLIP init) with the Text-aware Patch Detector after block k, top-K kept plus one
fused token, loss = ITC + ITM + MLM + PrefixLM + PTA, 256 px pretraining. What it leaves open and is therefore a
setting here: the keep ratio, the detection layers, the detector head width, the loss weights, the PTA threshold
tau and soft targets, which image path feeds ITC (``itc_image_path``) and how many patches it keeps
(``itc_keep_ratio``), and how ITM negatives get their visual tokens (``itm_negatives``: "reuse" takes the tokens the
image got with its own caption, as ALBEF/mPLUG reuse image features, no extra tail; "requery" runs the detector
with the negative pair's own text, as ``itm_score`` does at inference, one extra ViT tail per negative). The
defaults are the cheap training step measured in ``model/copa.py``. Activation checkpointing
(``grad_checkpointing``) is a setting of the image tower and of the text towers.

Under DDP (``model/distributed.py``): ITC contrasts each pair with every rank's pairs (``itc_global_batch``), and ITM
hard negatives come from the rank's own batch or from every rank's (``itm_negative_pool``, see ``docs/train.md``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

ITC_IMAGE_PATHS = ("cls_query", "text_query", "unpruned")
ITM_NEGATIVES = ("requery", "reuse")
NEGATIVE_POOLS = ("rank", "global")  # where ITM hard negatives are drawn from under DDP
POOLS = ("cls", "mean")  # how a text becomes one vector: its [CLS] state or the mean over its tokens
LOSS_WEIGHTS = ("w_itc", "w_itm", "w_mlm", "w_prefixlm", "w_pta", "w_caption", "w_vqa", "w_ground")
# What each training task optimizes (``copa finetune --task``): the loss weights it sets. A loss of weight 0 is not
# computed at all. Retrieval fine-tunes ITC and ITM with hard negatives (ALBEF, BLIP); captioning fine-tunes the
# decoder on whole captions after a prompt (BLIP, mPLUG); VQA, the decoder on the answer after the question (mPLUG);
# grounding, the box head (X-VLM) and PTA on the referent's patches, the detector's own grounding.
_OFF = dict.fromkeys(LOSS_WEIGHTS, 0.0)
TASK_LOSSES = {
    "pretrain": _OFF | {"w_itc": 1.0, "w_itm": 1.0, "w_mlm": 1.0, "w_prefixlm": 1.0, "w_pta": 1.0},
    "retrieval": _OFF | {"w_itc": 1.0, "w_itm": 1.0},
    "caption": _OFF | {"w_caption": 1.0},
    "vqa": _OFF | {"w_vqa": 1.0},
    "grounding": _OFF | {"w_ground": 1.0, "w_pta": 1.0},
}


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {value!r}")


@dataclass
class VisionConfig:
    """The ViT-TPD image tower: a timm VisionTransformer split around the detector(s)."""

    model_name: str | None = None  # timm architecture (e.g. "vit_base_patch16_clip_224"); None: plain timm ViT
    checkpoint: str | None = None  # local weights: timm/OpenCLIP state dict or transformers CLIP dir (model/vision.py)
    img_size: int = 256  # input side in pixels; position embeddings are resampled to it
    patch_size: int = 16  # pixels per patch side; N = (img_size // patch_size) ** 2
    embed_dim: int = 768  # token width D
    depth: int = 12  # number of transformer blocks
    num_heads: int = 12  # attention heads per block
    mlp_ratio: float = 4.0  # MLP hidden width / D
    detect_layers: tuple[int, ...] = (3,)  # the detector runs before these blocks (0-based), strictly increasing
    keep_ratios: tuple[float, ...] = (0.5,)  # per detect layer: kept fraction of the patches entering it, (0, 1]
    tpd_width: int = 256  # width of the detector's patch and query projections
    grad_checkpointing: bool = False  # recompute each ViT block in backward instead of keeping its activations

    def __post_init__(self) -> None:
        self.detect_layers = tuple(int(k) for k in self.detect_layers)
        self.keep_ratios = tuple(float(r) for r in self.keep_ratios)
        _positive(self, "img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "tpd_width")
        if self.img_size % self.patch_size:
            raise ValueError(
                f"VisionConfig.img_size ({self.img_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"VisionConfig.embed_dim ({self.embed_dim}) must be a multiple of num_heads ({self.num_heads})"
            )
        if not self.detect_layers:
            raise ValueError("VisionConfig.detect_layers must name at least one layer")
        if any(b <= a for a, b in zip(self.detect_layers, self.detect_layers[1:], strict=False)):
            raise ValueError(f"VisionConfig.detect_layers must be strictly increasing, got {self.detect_layers}")
        if self.detect_layers[0] < 0 or self.detect_layers[-1] >= self.depth:
            raise ValueError(
                f"VisionConfig.detect_layers must lie in [0, depth={self.depth}), got {self.detect_layers}"
            )
        if len(self.keep_ratios) != len(self.detect_layers):
            raise ValueError(
                f"VisionConfig.keep_ratios needs one ratio per detect layer: {len(self.detect_layers)} layers, "
                f"{len(self.keep_ratios)} ratios"
            )
        if not all(0.0 < r <= 1.0 for r in self.keep_ratios):
            raise ValueError(f"VisionConfig.keep_ratios must lie in (0, 1], got {self.keep_ratios}")

    @property
    def grid_size(self) -> int:
        """Patches per side, G (the PTA coverage grid must be G x G)."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def keep_counts(self) -> list[int]:
        """Patch tokens kept by each detector: K = ceil(keep_ratio * patches entering it)."""
        counts, n = [], self.num_patches
        for ratio in self.keep_ratios:
            n = keep_count(ratio, n)
            counts.append(n)
        return counts


def keep_count(keep_ratio: float, num_patches: int) -> int:
    """K = ceil(keep_ratio * N), rounded first so that 0.7 * 10 does not become 8 through float noise."""
    return max(1, min(num_patches, math.ceil(round(keep_ratio * num_patches, 6))))


@dataclass
class TextConfig:
    """BERT-style text encoder, fusion encoder (cross-attention to the image) and PrefixLM decoder, mPLUG-like."""

    vocab_size: int = 30522  # must match the tokenizer
    hidden: int = 768  # text width
    heads: int = 12  # attention heads
    intermediate: int = 3072  # feed-forward width
    text_layers: int = 6  # text encoder depth (the lower BERT layers when initialized from BERT)
    fusion_layers: int = 6  # fusion depth (the upper BERT layers; cross-attention always starts fresh)
    decoder_layers: int = 12  # PrefixLM decoder depth
    max_len: int = 40  # longest caption in tokens, [CLS] and [SEP] included
    max_position_embeddings: int = 512  # position table size (512 to load BERT checkpoints)
    dropout: float = 0.1  # hidden and attention dropout
    pad_id: int = 0
    cls_id: int = 101
    sep_id: int = 102
    mask_id: int = 103
    bos_id: int = 101  # first decoder input; BERT has no [BOS], so [CLS] serves (as in ALBEF's answer decoder)
    bert_dir: str | None = None  # local directory written by BertModel.save_pretrained; None: random init
    grad_checkpointing: bool = False  # recompute each text, fusion and decoder layer in backward (mPLUG does)

    def __post_init__(self) -> None:
        _positive(self, "vocab_size", "hidden", "heads", "intermediate", "text_layers", "fusion_layers")
        _positive(self, "decoder_layers", "max_len", "max_position_embeddings")
        if self.hidden % self.heads:
            raise ValueError(f"TextConfig.hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.max_len > self.max_position_embeddings:
            raise ValueError(
                f"TextConfig.max_len ({self.max_len}) exceeds max_position_embeddings ({self.max_position_embeddings})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TextConfig.dropout must lie in [0, 1), got {self.dropout}")
        for name in ("pad_id", "cls_id", "sep_id", "mask_id", "bos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"TextConfig.{name} ({value}) must lie in [0, vocab_size={self.vocab_size})")
        if len({self.pad_id, self.cls_id, self.sep_id, self.mask_id}) != 4:
            raise ValueError("TextConfig.pad_id, cls_id, sep_id and mask_id must be distinct")


@dataclass
class LossConfig:
    """Weights and settings of the five pretraining objectives, ITC, ITM, MLM, PrefixLM (mPLUG) and PTA (COPA), and
    of the fine-tuning ones (``TASK_LOSSES``)."""

    w_itc: float = 1.0  # image-text contrastive
    w_itm: float = 1.0  # image-text matching with hard negatives
    w_mlm: float = 1.0  # masked language modelling on the fused text
    w_prefixlm: float = 1.0  # caption continuation by the decoder
    w_pta: float = 1.0  # patch-text alignment of the detector logits
    w_caption: float = 0.0  # captioning: the decoder writes the whole caption after a fixed prompt (fine-tuning)
    w_vqa: float = 0.0  # VQA: the decoder writes an answer after the question (fine-tuning)
    w_ground: float = 0.0  # grounding: L1 + GIoU of the box head's box for the expression (fine-tuning)
    tau: float = 0.0  # PTA label: patch positive where coverage > tau (0: any overlap, the X-VLM convention)
    soft_pta: bool = False  # PTA targets coverage/255 instead of the hard labels
    mlm_prob: float = 0.15  # fraction of caption tokens chosen for MLM (then 80% [MASK], 10% random, 10% kept)
    temp_init: float = 0.07  # initial ITC temperature
    temp_min: float = 0.001  # the learnable temperature is clamped to [temp_min, temp_max] (ALBEF)
    temp_max: float = 0.5
    itc_queue_size: int = 0  # >0: ALBEF/mPLUG momentum encoders plus a feature queue of this length; 0: in-batch
    itc_momentum: float = 0.995  # EMA factor of the momentum encoders
    itc_distill_alpha: float = 0.4  # weight of the momentum model's soft targets (queue mode only)
    itc_global_batch: bool = True  # under DDP, ITC contrasts each pair with every rank's pairs; False: this rank's

    def __post_init__(self) -> None:
        for name in LOSS_WEIGHTS:
            if getattr(self, name) < 0:
                raise ValueError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not any(getattr(self, name) for name in LOSS_WEIGHTS):
            raise ValueError(f"LossConfig: every loss weight is 0 ({', '.join(LOSS_WEIGHTS)}); nothing to train")
        if not 0.0 <= self.tau < 1.0:
            raise ValueError(f"LossConfig.tau must lie in [0, 1), got {self.tau}")
        if not 0.0 < self.mlm_prob < 1.0:
            raise ValueError(f"LossConfig.mlm_prob must lie in (0, 1), got {self.mlm_prob}")
        if not 0.0 < self.temp_min <= self.temp_init <= self.temp_max:
            raise ValueError(
                f"LossConfig.temp_init ({self.temp_init}) must lie in [temp_min={self.temp_min}, "
                f"temp_max={self.temp_max}] with temp_min > 0"
            )
        if self.itc_queue_size < 0:
            raise ValueError(f"LossConfig.itc_queue_size must be >= 0, got {self.itc_queue_size}")
        if not 0.0 <= self.itc_momentum < 1.0:
            raise ValueError(f"LossConfig.itc_momentum must lie in [0, 1), got {self.itc_momentum}")
        if not 0.0 <= self.itc_distill_alpha <= 1.0:
            raise ValueError(f"LossConfig.itc_distill_alpha must lie in [0, 1], got {self.itc_distill_alpha}")


@dataclass
class COPAConfig:
    """The whole model: image tower, text towers, losses, the ITC embedding and its image path."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    embed_dim: int = 256  # shared ITC / retrieval embedding width E
    itc_image_path: str = "cls_query"  # "cls_query" | "text_query" (ablation: peeks at the text) | "unpruned"
    itm_negatives: str = "reuse"  # "reuse": a negative pair takes its image's tokens; "requery": its own text's
    itc_keep_ratio: float | None = 0.1  # "cls_query" path keeps this fraction (first detector); None: as fusion
    itm_negative_pool: str = "rank"  # under DDP, hard negatives from this rank's batch or from every rank's ("global")
    itc_pool: str = "cls"  # ITC embeddings from the [CLS] tokens (ALBEF, pretrained towers) or token means ("mean")
    query_pool: str = "cls"  # the detector's text query from the [CLS] state (the paper) or the token mean ("mean")

    def __post_init__(self) -> None:
        for name, kind in (("vision", VisionConfig), ("text", TextConfig), ("loss", LossConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"COPAConfig.{name} must be a {kind.__name__}, got {type(getattr(self, name))}")
        _positive(self, "embed_dim")
        if self.itc_image_path not in ITC_IMAGE_PATHS:
            raise ValueError(f"COPAConfig.itc_image_path must be one of {ITC_IMAGE_PATHS}, got {self.itc_image_path!r}")
        for name in ("itc_pool", "query_pool"):
            if getattr(self, name) not in POOLS:
                raise ValueError(f"COPAConfig.{name} must be one of {POOLS}, got {getattr(self, name)!r}")
        if self.itm_negatives not in ITM_NEGATIVES:
            raise ValueError(f"COPAConfig.itm_negatives must be one of {ITM_NEGATIVES}, got {self.itm_negatives!r}")
        if self.itm_negative_pool not in NEGATIVE_POOLS:
            raise ValueError(
                f"COPAConfig.itm_negative_pool must be one of {NEGATIVE_POOLS}, got {self.itm_negative_pool!r}"
            )
        if self.itm_negative_pool == "global" and self.itm_negatives != "reuse":
            raise ValueError(
                'COPAConfig.itm_negative_pool "global" needs itm_negatives "reuse" (a re-queried negative would need '
                "another rank's ViT tokens before the detector)"
            )
        if self.itc_keep_ratio is not None and not 0.0 < self.itc_keep_ratio <= 1.0:
            raise ValueError(f"COPAConfig.itc_keep_ratio must lie in (0, 1], got {self.itc_keep_ratio}")

    def itc_keep_ratios(self) -> tuple[float, ...] | None:
        """Per-detector keep ratios of the "cls_query" path: ``itc_keep_ratio`` at the first detector, nothing
        more dropped after it; None: the fusion path's own ratios."""
        if self.itc_keep_ratio is None:
            return None
        return (self.itc_keep_ratio,) + (1.0,) * (len(self.vision.detect_layers) - 1)


def from_dict(cls: type, data: dict, where: str) -> typing.Any:
    """The dataclass ``cls`` built from plain (JSON/YAML) dicts, nested dataclasses included; unknown keys are
    errors naming ``where`` (e.g. "train.yaml: model.vision")."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]):
            value = from_dict(hints[name], value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` applied, nested mappings merged key by key (a copy; neither input changes)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = merge(out[key], value)
        out[key] = value
    return out
