"""Text towers of COPA, mPLUG-like (arXiv 2308.03475 builds on mPLUG, arXiv 2205.12005), from ``transformers`` BERT.

- ``TextEncoder``: BERT embeddings + ``text_layers`` self-attention layers. Its [CLS] feeds ITC and, projected,
  drives the patch detector on the fusion path.
- ``FusionEncoder``: ``fusion_layers`` BERT layers whose text tokens cross-attend to the visual tokens
  [CLS, kept..., fused] (ALBEF-style fusion; ITM, MLM and the PrefixLM prefix run through it).
- ``TextDecoder``: ``decoder_layers`` BERT layers with causal self-attention and cross-attention to a memory
  (for PrefixLM: the visual tokens followed by the fused prefix states).
- ``LMHead``: BERT's prediction-head transform with the output matrix tied to the word embeddings.

The decoder reuses the encoder's embedding table (as the tied output matrix does), so one vocabulary matrix serves
encoder, MLM head, decoder and LM head.

Attention runs through PyTorch SDPA with explicit boolean masks (True = may attend). ``transformers`` only builds
cross-attention into a layer whose config says ``is_decoder``, which also marks its self-attention causal; the
fusion layers therefore get ``is_causal = False`` put back, and every call passes an explicit mask, so nothing
depends on that flag.

``init_text_weights`` is the BERT initialization (normal 0.02); ``load_bert`` copies a local BERT directory
(``BertModel.save_pretrained``): embeddings and the lower ``text_layers`` layers into the text encoder, the next
``fusion_layers`` into the fusion encoder and the first ``decoder_layers`` into the decoder (self-attention and
feed-forward; cross-attention has no BERT counterpart and keeps its fresh init).

Shape legend: B batch, T text tokens, M memory (visual) tokens, D text width, V vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer, BertPredictionHeadTransform

from model.config import TextConfig
from model.utils import run_layer


def bert_config(cfg: TextConfig, cross_attention: bool = False, causal: bool = False) -> BertConfig:
    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=1,  # layers are built one by one; the count lives in TextConfig
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=cfg.pad_id,
        is_decoder=cross_attention or causal,
        add_cross_attention=cross_attention,
        attn_implementation="sdpa",
    )


def padding_mask(mask_BT: Tensor) -> Tensor:
    """[B, 1, 1, T] boolean: every query may attend to the non-padding keys."""
    return mask_BT.bool()[:, None, None, :]


def causal_mask(mask_BT: Tensor) -> Tensor:
    """[B, 1, T, T] boolean: query t may attend to non-padding keys <= t."""
    T = mask_BT.shape[1]
    lower_TT = torch.ones(T, T, dtype=torch.bool, device=mask_BT.device).tril()
    return lower_TT[None, None] & padding_mask(mask_BT)


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        config = bert_config(cfg)
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(BertLayer(config, layer_idx=i) for i in range(cfg.text_layers))
        self.recompute = cfg.grad_checkpointing

    def embed(self, ids_BT: Tensor) -> Tensor:
        return self.embeddings(input_ids=ids_BT)

    def forward(self, ids_BT: Tensor, mask_BT: Tensor) -> Tensor:
        h_BTD, attn_mask = self.embed(ids_BT), padding_mask(mask_BT)
        for layer in self.layers:
            h_BTD = run_layer(layer, self.recompute, h_BTD, attn_mask)
        return h_BTD


class FusionEncoder(nn.Module):
    """Text self-attention (bidirectional) + cross-attention to visual tokens, per layer."""

    def __init__(self, cfg: TextConfig, vision_width: int) -> None:
        super().__init__()
        config = bert_config(cfg, cross_attention=True)
        self.layers = nn.ModuleList(BertLayer(config, layer_idx=i) for i in range(cfg.fusion_layers))
        for layer in self.layers:
            layer.attention.self.is_causal = False  # see the module docstring
        # Cross-attention keys/values take the text width; a projection bridges a ViT of another width.
        self.vision_proj = nn.Linear(vision_width, cfg.hidden) if vision_width != cfg.hidden else nn.Identity()
        self.recompute = cfg.grad_checkpointing

    def forward(self, text_BTD: Tensor, mask_BT: Tensor, visual_BMD: Tensor) -> Tensor:
        visual_BMD, attn_mask = self.vision_proj(visual_BMD), padding_mask(mask_BT)
        for layer in self.layers:
            # Every visual token is real, so the cross-attention needs no mask.
            text_BTD = run_layer(layer, self.recompute, text_BTD, attn_mask, encoder_hidden_states=visual_BMD)
        return text_BTD


class TextDecoder(nn.Module):
    """Causal text self-attention + cross-attention to a memory, per layer (PrefixLM)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        config = bert_config(cfg, cross_attention=True, causal=True)
        self.layers = nn.ModuleList(BertLayer(config, layer_idx=i) for i in range(cfg.decoder_layers))
        self.recompute = cfg.grad_checkpointing

    def forward(self, h_BTD: Tensor, mask_BT: Tensor, memory_BMD: Tensor, memory_mask_BM: Tensor) -> Tensor:
        self_mask, cross_mask = causal_mask(mask_BT), padding_mask(memory_mask_BM)
        for layer in self.layers:
            h_BTD = run_layer(
                layer,
                self.recompute,
                h_BTD,
                self_mask,
                encoder_hidden_states=memory_BMD,
                encoder_attention_mask=cross_mask,
            )
        return h_BTD


class LMHead(nn.Module):
    """Token logits: BERT's dense + GELU + LayerNorm transform, then the (tied) embedding matrix plus a bias."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(bert_config(cfg))
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h_BTD: Tensor, embedding_VD: Tensor) -> Tensor:
        return nn.functional.linear(self.transform(h_BTD), embedding_VD, self.bias)


@torch.no_grad()
def init_text_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT's initialization, applied with ``module.apply``: normal(0, std) weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        module.weight.normal_(0.0, std)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.normal_(0.0, std)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        module.weight.fill_(1.0)
        module.bias.zero_()


def _copy_layer(dst: BertLayer, src: BertLayer, what: str) -> None:
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    unmatched = [k for k in missing if not k.startswith("crossattention.")] + list(unexpected)
    if unmatched:
        raise ValueError(f"TextConfig.bert_dir: {what} does not match the BERT layer: {unmatched[:8]}")


def load_bert(encoder: TextEncoder, fusion: FusionEncoder, decoder: TextDecoder, cfg: TextConfig) -> None:
    """Initialize the three towers from ``cfg.bert_dir`` (local only; nothing is downloaded)."""
    if not cfg.bert_dir or not Path(cfg.bert_dir, "config.json").is_file():
        raise FileNotFoundError(f"TextConfig.bert_dir: no BERT checkpoint (config.json) in {cfg.bert_dir!r}")
    bert = BertModel.from_pretrained(cfg.bert_dir, local_files_only=True)
    got = bert.config
    for field, want, have in (
        ("vocab_size", cfg.vocab_size, got.vocab_size),
        ("hidden", cfg.hidden, got.hidden_size),
        ("heads", cfg.heads, got.num_attention_heads),
        ("intermediate", cfg.intermediate, got.intermediate_size),
        ("max_position_embeddings", cfg.max_position_embeddings, got.max_position_embeddings),
    ):
        if want != have:
            raise ValueError(f"TextConfig.{field} is {want} but the BERT in {cfg.bert_dir!r} has {have}")
    bert_layers = bert.encoder.layer
    if cfg.text_layers + cfg.fusion_layers > len(bert_layers):
        raise ValueError(
            f"TextConfig.text_layers + fusion_layers ({cfg.text_layers + cfg.fusion_layers}) exceeds the "
            f"{len(bert_layers)} layers of the BERT in {cfg.bert_dir!r}"
        )
    encoder.embeddings.load_state_dict(bert.embeddings.state_dict())
    for i, layer in enumerate(encoder.layers):
        _copy_layer(layer, bert_layers[i], f"text layer {i}")
    for i, layer in enumerate(fusion.layers):
        _copy_layer(layer, bert_layers[cfg.text_layers + i], f"fusion layer {i}")
    for i, layer in enumerate(decoder.layers[: len(bert_layers)]):
        _copy_layer(layer, bert_layers[i], f"decoder layer {i}")
