"""ViT-TPD: a timm VisionTransformer with COPA's Text-aware Patch Detector between its blocks (arXiv 2308.03475).

The tower runs timm's own pieces in timm's order, split around the detector(s):

    patch_embed -> _pos_embed -> patch_drop -> norm_pre -> blocks[:k0]          (forward_shared)
    -> [detector(query) -> blocks[k_i:k_i+1] ...] -> norm                       (forward_tail)

``forward_shared`` runs the blocks before the first detect layer once; ``forward_tail`` runs the rest for a given
query, so the retrieval path (image [CLS] as query, or no detector) and the text-aware fusion path share
blocks[:k0] (DESIGN section 7). With every keep ratio at 1.0 the detectors are identities and the output equals
timm's ``forward_features`` bit for bit.

Several detect layers: each later detector scores only the patches the previous one kept (its keep ratio is a
fraction of those); the previous fused token is set aside and merged with the newly fused one, weighted by the
number of patches each stands for, so the sequence stays [CLS, kept..., fused].

Weights (``VisionConfig.checkpoint``, local only): random timm init; a timm state dict
(``torch.load(weights_only=True)`` or safetensors); an OpenCLIP checkpoint or a converted OpenAI one (``visual.*``
keys: timm's ``checkpoint_filter_fn`` converts them); or a transformers CLIP directory (``CLIPModel`` or
``CLIPVisionModel``: ``config.json`` plus ``model.safetensors`` or ``pytorch_model.bin``), whose config must
describe the tower, activation included (OpenAI's CLIP uses QuickGELU: ``vit_base_patch16_clip_quickgelu_224``).
OpenAI's released ``.pt`` files are TorchScript archives, whose loading runs code: they are refused with a one-line
conversion recipe. Position embeddings are resampled with ``resample_abs_pos_embed`` (bicubic, antialiased) when the
checkpoint was trained at another resolution, e.g. a 224 px CLIP checkpoint used at 256, 384 or 576 px. A checkpoint
of another architecture is refused naming the first mismatched shapes and keys.
``tests/model/test_vision_weights.py`` checks each layout against transformers' own CLIP on the same pixels.

Shape legend: B batch, N patch tokens, K kept, D width; sequences carry the [CLS] token in front.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import NamedTuple

import timm
import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn

from model.config import VisionConfig
from model.cost import component
from model.tpd import TextAwarePatchDetector
from model.utils import load_exactly, run_layer


def build_vit(cfg: VisionConfig) -> VisionTransformer:
    """A timm ViT with a class token and no classifier head, by name or from explicit dims; never downloads."""
    dims = {
        "img_size": cfg.img_size,
        "patch_size": cfg.patch_size,
        "embed_dim": cfg.embed_dim,
        "depth": cfg.depth,
        "num_heads": cfg.num_heads,
        "mlp_ratio": cfg.mlp_ratio,
        "num_classes": 0,
    }
    # With a name, the config's dims override the named architecture's, so the config stays the single source of
    # truth; the name contributes the block style (pre-norm, LayerNorm eps, ...).
    vit = timm.create_model(cfg.model_name, pretrained=False, **dims) if cfg.model_name else VisionTransformer(**dims)
    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"VisionConfig.model_name {cfg.model_name!r} is not a timm VisionTransformer")
    if vit.cls_token is None or vit.num_prefix_tokens != 1 or vit.dynamic_img_size:
        raise ValueError(
            f"VisionConfig.model_name {cfg.model_name!r}: the detector needs exactly one [CLS] prefix token, "
            "no register tokens and a fixed image size"
        )
    if cfg.checkpoint:
        load_vit_checkpoint(vit, cfg.checkpoint, cfg)
    return vit


HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # a transformers save_pretrained directory holds one
TORCHSCRIPT_RECIPE = (
    "it is a TorchScript archive (OpenAI's released CLIP files are), and loading one runs the code it contains, so "
    'it is not read here. Convert it once, where you trust the file: python -c "import torch; torch.save(torch.jit.'
    "load('{path}', map_location='cpu').state_dict(), 'clip_state.pt')\" and give clip_state.pt (OpenAI CLIP uses "
    "QuickGELU: model.vision.model_name vit_base_patch16_clip_quickgelu_224)"
)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file, without unpickling arbitrary objects; a TorchScript archive is refused with
    a conversion recipe."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VisionConfig.checkpoint: no such file {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist()):
                raise ValueError(f"VisionConfig.checkpoint {str(path)!r}: " + TORCHSCRIPT_RECIPE.format(path=path))
    return torch.load(path, map_location="cpu", weights_only=True)


def hf_clip_state_dict(folder: Path, cfg: VisionConfig) -> dict[str, Tensor]:
    """The vision tower of a transformers ``CLIPModel`` / ``CLIPVisionModel`` directory, in timm's key layout.

    Its ``config.json`` must describe the configured tower (width, depth, heads, patch, MLP width, activation and
    LayerNorm eps), else the error lists every difference. q, k and v projections are fused into timm's ``qkv``;
    ``post_layernorm`` becomes the final ``norm`` (timm applies it to every token, transformers to the pooled one)."""
    config = json.loads((folder / "config.json").read_text())
    vision = config.get("vision_config", config)
    weights = next((folder / name for name in HF_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"VisionConfig.checkpoint {str(folder)!r}: no {' or '.join(HF_WEIGHTS)} in the folder")
    act = "quick_gelu" if cfg.model_name and "quickgelu" in cfg.model_name else "gelu"
    expected = {
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "patch_size": cfg.patch_size,
        "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
    }
    differ = [f"{k} {vision.get(k)!r} (the tower: {v!r})" for k, v in expected.items() if vision.get(k) != v]
    if differ:
        quick = vision.get("hidden_act") == "quick_gelu" and act != "quick_gelu"
        hint = " (QuickGELU: model.vision.model_name vit_base_patch16_clip_quickgelu_224)" if quick else ""
        raise ValueError(
            f"VisionConfig.checkpoint {str(folder)!r}: config.json does not describe the configured ViT: "
            + "; ".join(differ)
            + hint
        )
    raw = read_state_dict(weights)
    # CLIPModel (and CLIPVisionModel before transformers 5) name the tower's tensors vision_model.*; a
    # CLIPVisionModel saved by transformers 5 names them from embeddings.* on
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in raw) else ""
    source = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
    if "embeddings.class_embedding" not in source:
        raise ValueError(f"VisionConfig.checkpoint {str(folder)!r}: {weights.name} holds no CLIP vision tower")
    state = {
        "cls_token": source.pop("embeddings.class_embedding").reshape(1, 1, -1),
        "patch_embed.proj.weight": source.pop("embeddings.patch_embedding.weight"),
        "pos_embed": source.pop("embeddings.position_embedding.weight")[None],
    }
    renames = {"pre_layrnorm.": "norm_pre.", "post_layernorm.": "norm."}
    for i in range(cfg.depth):
        layer, block = f"encoder.layers.{i}.", f"blocks.{i}."
        for part in ("weight", "bias"):
            qkv = [source.pop(f"{layer}self_attn.{x}_proj.{part}") for x in "qkv"]
            state[f"{block}attn.qkv.{part}"] = torch.cat(qkv)
        renames |= {
            f"{layer}self_attn.out_proj.": f"{block}attn.proj.",
            f"{layer}layer_norm1.": f"{block}norm1.",
            f"{layer}layer_norm2.": f"{block}norm2.",
            f"{layer}mlp.fc1.": f"{block}mlp.fc1.",
            f"{layer}mlp.fc2.": f"{block}mlp.fc2.",
        }
    for key, value in source.items():
        old = next((o for o in renames if key.startswith(o)), None)
        state[renames[old] + key[len(old) :] if old else f"unknown.{key}"] = value
    return state


def load_vit_checkpoint(vit: VisionTransformer, path: str | Path, cfg: VisionConfig | None = None) -> None:
    """Load weights into ``vit``, resampling position embeddings to its grid: a timm state dict, an OpenCLIP or
    (converted) OpenAI state dict (``visual.*``, converted by timm's ``checkpoint_filter_fn``), or a transformers
    CLIP directory. A checkpoint of another architecture is refused naming the first keys that do not fit."""
    path = Path(path)
    if path.is_dir():
        if cfg is None or not (path / "config.json").is_file():
            raise ValueError(f"VisionConfig.checkpoint {str(path)!r}: a folder must be a transformers CLIP directory")
        state = hf_clip_state_dict(path, cfg)
    else:
        state = read_state_dict(path)
    state = checkpoint_filter_fn(state, vit)
    if isinstance(vit.head, nn.Identity):  # classifier or projection weights of the checkpoint have no place here
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    load_exactly(vit, state, f"VisionConfig.checkpoint {str(path)!r} does not fit the configured ViT", "the tower")


class VisionOutput(NamedTuple):
    """Visual tokens for fusion or retrieval, and what each detector did (empty lists when not pruning)."""

    tokens: Tensor  # [B, K_last + 2, D] after the final norm ([B, N + 1, D] when nothing was dropped)
    logits: list[Tensor]  # per detect layer [B, N_s]: scores of the patches entering that detector
    scored_idx: list[Tensor]  # per detect layer [B, N_s]: original patch index of each scored patch
    kept_idx: list[Tensor]  # per detect layer [B, K_s]: original indices of the kept patches, sorted


class VisionTPD(nn.Module):
    """The image tower of COPA: timm ViT blocks with ``TextAwarePatchDetector``s before ``detect_layers``."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vit = build_vit(cfg)
        # Every query reaching the detectors has the ViT width: the image [CLS] as it is, the text [CLS] after
        # COPA's projection.
        self.detectors = nn.ModuleList(
            TextAwarePatchDetector(cfg.embed_dim, cfg.embed_dim, cfg.tpd_width, ratio) for ratio in cfg.keep_ratios
        )
        self.detector_at = {layer: i for i, layer in enumerate(cfg.detect_layers)}

    def set_detection(self, detect_layers: tuple[int, ...], keep_ratios: tuple[float, ...]) -> None:
        """Move the detectors to other layers or give them other keep ratios, e.g. to evaluate one checkpoint at
        several keep ratios. The number of detectors is fixed by the weights."""
        cfg = dataclasses.replace(self.cfg, detect_layers=tuple(detect_layers), keep_ratios=tuple(keep_ratios))
        if len(cfg.detect_layers) != len(self.detectors):
            raise ValueError(f"VisionConfig.detect_layers: this model has {len(self.detectors)} detector(s)")
        self.cfg = cfg
        self.detector_at = {layer: i for i, layer in enumerate(cfg.detect_layers)}
        for detector, ratio in zip(self.detectors, cfg.keep_ratios, strict=True):
            detector.keep_ratio = ratio

    @property
    def prunes(self) -> bool:
        """False when every detector keeps all patches: the tail then ignores its query."""
        return any(det.keep_ratio < 1.0 for det in self.detectors)

    def forward_shared(self, image_BCHW: Tensor) -> Tensor:
        """Patch embedding and the blocks before the first detect layer: [B, N + 1, D]."""
        vit = self.vit
        x_BND = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(image_BCHW))))
        for layer in range(self.cfg.detect_layers[0]):
            x_BND = self._block(layer, x_BND)
        return x_BND

    def _block(self, layer: int, x_BND: Tensor) -> Tensor:
        return run_layer(self.vit.blocks[layer], self.cfg.grad_checkpointing, x_BND)

    def forward_tail(
        self,
        x_BND: Tensor,
        query_BD: Tensor | None = None,
        prune: bool = True,
        keep_ratios: tuple[float, ...] | None = None,
    ) -> VisionOutput:
        """The remaining blocks with detection. ``query_BD`` None: each detector uses the current image [CLS].

        ``prune=False`` skips the detectors (the "unpruned" ITC path); ``keep_ratios`` (one per detector) replaces
        the detectors' own keep ratios for this call.
        """
        vit = self.vit
        out = VisionOutput(x_BND, [], [], [])
        patch_idx_BN: Tensor | None = None  # original index of each current patch token; None: all, in order
        num_fused = 0  # patches the trailing fused token stands for (0: there is no fused token yet)
        for layer in range(self.cfg.detect_layers[0], self.cfg.depth):
            if prune and layer in self.detector_at:
                i = self.detector_at[layer]
                ratio = None if keep_ratios is None else keep_ratios[i]
                with component("detector"):
                    x_BND, patch_idx_BN, num_fused = self._detect(
                        self.detectors[i], ratio, x_BND, query_BD, patch_idx_BN, num_fused, out
                    )
            x_BND = self._block(layer, x_BND)
        return out._replace(tokens=vit.norm(x_BND))

    def _detect(
        self,
        detector: TextAwarePatchDetector,
        keep_ratio: float | None,
        x_BND: Tensor,
        query_BD: Tensor | None,
        patch_idx_BN: Tensor | None,
        num_fused: int,
        out: VisionOutput,
    ) -> tuple[Tensor, Tensor, int]:
        fused_prev_B1D = None
        if num_fused:  # a later detector: set the earlier fused token aside, it is not a patch to score
            x_BND, fused_prev_B1D = x_BND[:, :-1], x_BND[:, -1:]
        num_in = x_BND.shape[1] - 1
        det = detector(x_BND, x_BND[:, 0] if query_BD is None else query_BD, keep_ratio)
        if patch_idx_BN is None:
            patch_idx_BN = torch.arange(num_in, device=x_BND.device).expand(x_BND.shape[0], num_in)
        kept_idx_BK = patch_idx_BN.gather(1, det.kept_idx)
        out.logits.append(det.logits)
        out.scored_idx.append(patch_idx_BN)
        out.kept_idx.append(kept_idx_BK)

        x_BKD, num_new = det.tokens, num_in - det.kept_idx.shape[1]
        if fused_prev_B1D is not None:
            if num_new:
                merged_B1D = (num_fused * fused_prev_B1D + num_new * x_BKD[:, -1:]) / (num_fused + num_new)
                x_BKD = torch.cat([x_BKD[:, :-1], merged_B1D], dim=1)
            else:
                x_BKD = torch.cat([x_BKD, fused_prev_B1D], dim=1)
        return x_BKD, kept_idx_BK, num_fused + num_new

    def forward(self, image_BCHW: Tensor, query_BD: Tensor | None = None, prune: bool = True) -> VisionOutput:
        return self.forward_tail(self.forward_shared(image_BCHW), query_BD, prune)
