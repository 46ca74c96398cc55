"""Model presets for COPA (arXiv 2308.03475): plain functions returning complete, validated ``COPAConfig`` objects.

- ``tiny``: unit tests. 32 px images in 8 px patches (a 4 x 4 grid), 64 wide, one layer per text tower.
- ``small``: the CPU demo. 128 px, 16 px patches (8 x 8), width 192, a 6-block ViT with the detector after block 3,
  two layers each for the text encoder, fusion and decoder; learns within minutes on two cores.
- ``base``: the paper's setting. OpenAI's CLIP ViT-B/16 image tower (timm ``vit_base_patch16_clip_quickgelu_224``:
  QuickGELU, as OpenAI trained it; OpenCLIP's LAION towers use GELU, ``vit_base_patch16_clip_224``), position
  embeddings resampled to 256 px, random init unless ``vision.checkpoint`` names local weights (``--vision-weights``),
  with the detector before block 3, and BERT-base text towers split as in mPLUG (``--text-weights``): 6 text + 6
  fusion layers, a 12-layer decoder;
  mPLUG's contrastive recipe: momentum towers and a queue of 65,536 features (momentum 0.995, distillation 0.4).

The small presets use the special-token layout of a WordPiece vocabulary trained with the ``tokenizers`` library
and the special tokens listed first: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4. The base preset uses BERT's
uncased vocabulary ids. A trainer sets ``text.vocab_size`` from its tokenizer with ``dataclasses.replace``.

Text pooling: ``base`` takes the [CLS] tokens for ITC and as the detector's query, as ALBEF and COPA do with
pretrained towers. The small presets train from scratch, where a freshly initialized BERT's [CLS] state is the same
for every caption (cosine 1.000 across a batch), so they pool by the token mean for both (``itc_pool``,
``query_pool``). With [CLS], ITC sat at chance (ln B) for the whole demo while PTA learned; with token means ITC
learns from the first steps (tiny at 64 px, 300 steps: ITC loss 2.77 -> 2.01, text-to-image R@1 0.15 against
chance 0.045). A [CLS] query also leaves the "text-aware" detector blind to the caption, so it learns generic
objectness; with the mean query the demo's PTA loss ends at 0.32 instead of 0.36 (400 steps of ``small``).

Keep ratio and layer: the paper states neither. ``base`` keeps 0.5 of the patches before block 3, its retrieval
path 0.1 (``itc_keep_ratio``), and reuses each image's tokens for the ITM negatives: counted per sample at 256 px,
its training step costs x0.71 the FLOPs and x0.73 the activation bytes of the same model at keep ratio 1.0 (x0.66
and x0.73 with the momentum recipe, whose towers prune too), where
detecting before block 6 with a full-size retrieval tail and re-queried negatives cost more than the unpruned model
(``model/copa.py`` has the accounting and the alternatives; ``copa bench model`` measures them). The demo's
held-out detector recall is 0.81 at keep 0.5 and 0.66 at 0.3.
"""

from __future__ import annotations

from model.config import COPAConfig, LossConfig, TextConfig, VisionConfig

WORDPIECE_SPECIALS = {"pad_id": 0, "cls_id": 2, "sep_id": 3, "mask_id": 4, "bos_id": 2}


def tiny() -> COPAConfig:
    vision = VisionConfig(
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=4,
        num_heads=2,
        mlp_ratio=2.0,
        detect_layers=(2,),
        keep_ratios=(0.5,),
        tpd_width=32,
    )
    text = TextConfig(
        vocab_size=500,
        hidden=64,
        heads=2,
        intermediate=128,
        text_layers=1,
        fusion_layers=1,
        decoder_layers=1,
        max_len=16,
        max_position_embeddings=32,
        dropout=0.0,
        **WORDPIECE_SPECIALS,
    )
    return COPAConfig(vision=vision, text=text, loss=LossConfig(), embed_dim=32, itc_pool="mean", query_pool="mean")


def small() -> COPAConfig:
    vision = VisionConfig(
        img_size=128,
        patch_size=16,
        embed_dim=192,
        depth=6,
        num_heads=3,
        detect_layers=(3,),
        keep_ratios=(0.5,),
        tpd_width=128,
    )
    text = TextConfig(
        vocab_size=8192,
        hidden=192,
        heads=3,
        intermediate=768,
        text_layers=2,
        fusion_layers=2,
        decoder_layers=2,
        max_len=32,
        max_position_embeddings=64,
        dropout=0.1,
        **WORDPIECE_SPECIALS,
    )
    return COPAConfig(vision=vision, text=text, loss=LossConfig(), embed_dim=128, itc_pool="mean", query_pool="mean")


def base() -> COPAConfig:
    vision = VisionConfig(
        model_name="vit_base_patch16_clip_quickgelu_224",
        img_size=256,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        detect_layers=(3,),
        keep_ratios=(0.5,),
        tpd_width=256,
    )
    text = TextConfig(
        vocab_size=30522,
        hidden=768,
        heads=12,
        intermediate=3072,
        text_layers=6,
        fusion_layers=6,
        decoder_layers=12,
        max_len=40,
        max_position_embeddings=512,
        dropout=0.1,
    )
    # mPLUG's (and ALBEF's) contrastive recipe: momentum towers, a 65,536-feature queue, distillation weight 0.4
    loss = LossConfig(itc_queue_size=65_536, itc_momentum=0.995, itc_distill_alpha=0.4)
    return COPAConfig(vision=vision, text=text, loss=loss, embed_dim=256)


PRESETS = {"tiny": tiny, "small": small, "base": base}


def preset(name: str) -> COPAConfig:
    """The preset called ``name``; a ``ValueError`` lists the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]()
