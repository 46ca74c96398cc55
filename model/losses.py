"""The five COPA objectives (arXiv 2308.03475): ITC, ITM, MLM, PrefixLM (as in mPLUG) and PTA (COPA's own).

Pure functions over tensors; ``model/copa.py`` runs the towers and weights the results (``LossConfig``).

- ITC: symmetric InfoNCE over the in-batch image/text embeddings with a learnable, clamped temperature
  (``itc_loss``); with momentum encoders and a queue the targets are soft (``soft_contrastive_loss``, used by
  ``model/momentum.py``).
- ITM: binary classification of the fused [CLS] over the positive pairs and hard negatives drawn from the ITC
  similarities (``sample_hard_negatives``): one negative text per image and one negative image per text,
  sampled with softmax weights, the positive excluded. Duplicate captions inside a batch are not detected: with
  hundreds of distinct captions per batch the chance of drawing a duplicate as a "negative" is negligible.
- MLM: BERT masking (``mask_tokens``): 15% of the caption's word tokens, of which 80% become [MASK], 10% a random
  token and 10% stay; every caption with a word gets at least one target, so a batch never has zero targets.
- PrefixLM: each caption is cut at a random word boundary (``split_prefix``); the prefix (possibly just [CLS]) is
  encoded and fused with the image, the decoder predicts the rest (and [SEP]) with teacher forcing.
- PTA: binary cross-entropy of the detector logits against patch labels ``coverage / 255 > tau`` (or soft targets
  ``coverage / 255``), averaged over the labelled samples only and over the detect layers. A later detect layer
  scores only the patches kept by the earlier one, so its labels are gathered through those indices. A batch
  without labels gives exactly 0, still attached to the graph.
- Fine-tuning: captioning and VQA are token losses on the decoder (``caption_split``: the whole caption, or the
  answer, after the prompt or the question); grounding is X-VLM's box loss (``box_loss``: L1 on centre and size
  plus the generalized IoU loss).

Token losses evaluate the vocabulary head only at positions that have a target (the masked tokens, the
continuation), which keeps the V-wide projection off the padding.

Shape legend: B batch, T text tokens, N patches, G patch-grid side (G * G == N), E embedding width, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, generalized_box_iou_loss

from model.config import TextConfig

IGNORE = -100  # target value that the token losses skip


def itc_loss(
    img_BE: Tensor,
    txt_BE: Tensor,
    temp: Tensor,
    img_CE: Tensor | None = None,
    txt_CE: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """Symmetric InfoNCE over L2-normalized embeddings: each of the B local pairs against the C candidates
    ``img_CE`` / ``txt_CE`` (default: the local pairs), its own pair sitting at candidate ``offset + i``.

    Under DDP the candidates are every rank's embeddings (``model.distributed.gather_with_grad``) and the loss is a
    mean over the local rows, so DDP's gradient average over W ranks equals the gradient of one process holding the
    W * B pairs."""
    img_CE = img_BE if img_CE is None else img_CE
    txt_CE = txt_BE if txt_CE is None else txt_CE
    target_B = offset + torch.arange(img_BE.shape[0], device=img_BE.device)
    loss_i2t = F.cross_entropy(img_BE @ txt_CE.t() / temp, target_B)
    loss_t2i = F.cross_entropy(txt_BE @ img_CE.t() / temp, target_B)
    return (loss_i2t + loss_t2i) / 2


def soft_contrastive_loss(sim_i2t: Tensor, sim_t2i: Tensor, target_i2t: Tensor, target_t2i: Tensor) -> Tensor:
    """Cross-entropy of similarity rows against soft target rows (each summing to 1), averaged both ways."""
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * target_i2t).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * target_t2i).sum(dim=1).mean()
    return (loss_i2t + loss_t2i) / 2


@torch.no_grad()
def sample_hard_negatives(sim_i2t_BC: Tensor, sim_t2i_BC: Tensor, offset: int = 0) -> tuple[Tensor, Tensor]:
    """One negative text per image and one negative image per text, drawn with softmax(similarity) weights from
    the C candidates, the positive (candidate ``offset + i`` of row i) excluded.

    Returns ``(neg_text_B, neg_image_B)``, indices into the candidates. Needs C >= 2.
    """
    B, C = sim_i2t_BC.shape
    if C < 2:
        raise ValueError("ITM hard negatives need a batch of at least 2 pairs")
    positive_BC = torch.zeros(B, C, dtype=torch.bool, device=sim_i2t_BC.device)
    positive_BC[torch.arange(B), offset + torch.arange(B)] = True
    # The small floor keeps every non-positive drawable when the softmax underflows (a very sharp temperature).
    w_i2t = (sim_i2t_BC.float().softmax(dim=1) + 1e-6).masked_fill(positive_BC, 0.0)
    w_t2i = (sim_t2i_BC.float().softmax(dim=1) + 1e-6).masked_fill(positive_BC, 0.0)
    return torch.multinomial(w_i2t, 1).squeeze(1), torch.multinomial(w_t2i, 1).squeeze(1)


def itm_loss(logits_P2: Tensor, num_pos: int) -> tuple[Tensor, Tensor]:
    """Cross-entropy of match/no-match logits: the first ``num_pos`` rows are positives, the rest negatives.

    Returns ``(loss, accuracy)``.
    """
    labels_P = torch.zeros(logits_P2.shape[0], dtype=torch.long, device=logits_P2.device)
    labels_P[:num_pos] = 1
    acc = (logits_P2.argmax(dim=1) == labels_P).float().mean()
    return F.cross_entropy(logits_P2.float(), labels_P), acc.detach()


def _special_mask(ids_BT: Tensor, mask_BT: Tensor, cfg: TextConfig) -> Tensor:
    return ~mask_BT.bool() | (ids_BT == cfg.pad_id) | (ids_BT == cfg.cls_id) | (ids_BT == cfg.sep_id)


def mask_tokens(ids_BT: Tensor, mask_BT: Tensor, cfg: TextConfig, prob: float = 0.15) -> tuple[Tensor, Tensor]:
    """BERT masking. Returns ``(masked_ids_BT, labels_BT)``; labels are ``IGNORE`` where there is no target."""
    eligible_BT = ~_special_mask(ids_BT, mask_BT, cfg)
    chosen_BT = (torch.rand(ids_BT.shape, device=ids_BT.device) < prob) & eligible_BT
    # Short captions often draw no target at all; give each such caption one at random.
    missing_B = ~chosen_BT.any(dim=1) & eligible_BT.any(dim=1)
    if missing_B.any():
        pick_B = torch.rand(ids_BT.shape, device=ids_BT.device).masked_fill(~eligible_BT, -1.0).argmax(dim=1)
        extra_BT = torch.zeros_like(chosen_BT).scatter_(1, pick_B[:, None], True) & missing_B[:, None]
        chosen_BT = chosen_BT | extra_BT
    labels_BT = ids_BT.masked_fill(~chosen_BT, IGNORE)

    roll_BT = torch.rand(ids_BT.shape, device=ids_BT.device)
    to_mask_BT = chosen_BT & (roll_BT < 0.8)
    to_random_BT = chosen_BT & (roll_BT >= 0.8) & (roll_BT < 0.9)
    random_BT = torch.randint_like(ids_BT, cfg.vocab_size)
    masked_BT = ids_BT.masked_fill(to_mask_BT, cfg.mask_id)
    masked_BT = torch.where(to_random_BT, random_BT, masked_BT)
    return masked_BT, labels_BT


class PrefixSplit(NamedTuple):
    """A caption cut into an encoder prefix and a decoder continuation (teacher forcing)."""

    prefix_ids: Tensor  # [B, P]: [CLS] and the first s words, then padding
    prefix_mask: Tensor  # [B, P]
    decoder_ids: Tensor  # [B, L]: [BOS] followed by the continuation without its last token
    decoder_mask: Tensor  # [B, L]
    targets: Tensor  # [B, L]: the continuation words and [SEP], IGNORE on padding


def split_prefix(ids_BT: Tensor, mask_BT: Tensor, cfg: TextConfig, split_B: Tensor | None = None) -> PrefixSplit:
    """Cut each caption [CLS w1..wn SEP] after s words: prefix [CLS w1..ws], target ws+1..SEP; s is ``split_B`` or,
    by default, uniform in [0, n-1]."""
    B, T = ids_BT.shape
    length_B = mask_BT.long().sum(dim=1)
    if split_B is None:
        num_words_B = (length_B - 2).clamp(min=1)
        split_B = (torch.rand(B, device=ids_BT.device) * num_words_B).long()  # uniform in [0, num_words - 1]
    pos_T = torch.arange(T, device=ids_BT.device)

    prefix_len_B = 1 + split_B
    P = int(prefix_len_B.max())
    prefix_mask_BP = (pos_T[:P] < prefix_len_B[:, None]) & mask_BT[:, :P].bool()
    prefix_ids_BP = ids_BT[:, :P].masked_fill(~prefix_mask_BP, cfg.pad_id)

    cont_len_B = (length_B - prefix_len_B).clamp(min=1)
    L = int(cont_len_B.max())
    source_BL = (pos_T[:L] + prefix_len_B[:, None]).clamp(max=T - 1)
    cont_mask_BL = pos_T[:L] < cont_len_B[:, None]
    cont_BL = ids_BT.gather(1, source_BL)
    targets_BL = cont_BL.masked_fill(~cont_mask_BL, IGNORE)
    bos_B1 = torch.full((B, 1), cfg.bos_id, dtype=ids_BT.dtype, device=ids_BT.device)
    decoder_ids_BL = torch.cat([bos_B1, cont_BL[:, :-1]], dim=1).masked_fill(~cont_mask_BL, cfg.pad_id)
    return PrefixSplit(prefix_ids_BP, prefix_mask_BP.long(), decoder_ids_BL, cont_mask_BL.long(), targets_BL)


def caption_split(ids_BT: Tensor, mask_BT: Tensor, cfg: TextConfig, prompt_ids: Tensor | None = None) -> PrefixSplit:
    """Captioning targets: the whole caption w1..wn SEP after the prefix ``prompt_ids`` ([1, P] or [B, P]: [CLS] and
    the prompt's words, no [SEP]), or after [CLS] alone."""
    whole = split_prefix(ids_BT, mask_BT, cfg, torch.zeros(ids_BT.shape[0], dtype=torch.long, device=ids_BT.device))
    if prompt_ids is None:
        return whole
    prefix_BP = prompt_ids.expand(ids_BT.shape[0], -1)
    return whole._replace(prefix_ids=prefix_BP, prefix_mask=(prefix_BP != cfg.pad_id).long())


def token_loss(
    head: Callable[[Tensor, Tensor], Tensor], h_BTD: Tensor, labels_BT: Tensor, embedding_VD: Tensor
) -> Tensor:
    """Cross-entropy of ``head(h, embedding)`` at the positions with a target; 0 (in the graph) when there is none."""
    where_BT = labels_BT != IGNORE
    if not where_BT.any():
        return h_BTD.sum() * 0.0
    logits_SV = head(h_BTD[where_BT], embedding_VD)
    return F.cross_entropy(logits_SV.float(), labels_BT[where_BT])


def pta_targets(coverage_BGG: Tensor, tau: float, soft: bool) -> Tensor:
    """[B, N] float targets from a uint8 coverage grid: hard ``coverage / 255 > tau`` or soft ``coverage / 255``."""
    cov_BN = coverage_BGG.flatten(1).float() / 255.0
    return cov_BN if soft else (cov_BN > tau).float()


def pta_loss(
    logits: list[Tensor],
    scored_idx: list[Tensor],
    coverage_BGG: Tensor,
    has_labels_B: Tensor,
    tau: float = 0.0,
    soft: bool = False,
) -> Tensor:
    """Mean BCE of each detect layer's logits over the labelled samples; exactly 0 when none is labelled."""
    if not logits:
        raise ValueError("pta_loss needs the logits of at least one detect layer")
    B, N = logits[0].shape
    if coverage_BGG.dim() != 3 or coverage_BGG.shape[0] != B or coverage_BGG.shape[1] * coverage_BGG.shape[2] != N:
        raise ValueError(
            f"coverage must be [B={B}, G, G] with G * G == N = {N} patches, got {tuple(coverage_BGG.shape)}; "
            "recompute coverage for this image size (DESIGN section 5)"
        )
    targets_BN = pta_targets(coverage_BGG, tau, soft)
    weight_B = has_labels_B.to(targets_BN.dtype)
    total = torch.zeros((), device=logits[0].device)
    for logits_BS, idx_BS in zip(logits, scored_idx, strict=True):
        bce_B = F.binary_cross_entropy_with_logits(
            logits_BS.float(), targets_BN.gather(1, idx_BS), reduction="none"
        ).mean(dim=1)
        total = total + (bce_B * weight_B).sum() / weight_B.sum().clamp(min=1.0)
    return total / len(logits)


def box_loss(pred_B4: Tensor, target_B4: Tensor, has_box_B: Tensor) -> tuple[Tensor, Tensor]:
    """Grounding (X-VLM): L1 between the boxes as centre and size plus the generalized IoU loss, both boxes
    normalized x0, y0, x1, y1, averaged over the samples that have a box (exactly 0 when none has); and, detached,
    their mean IoU."""
    weight_B = has_box_B.to(pred_B4.dtype)
    target_B4 = target_B4.to(pred_B4.dtype)
    l1_B = (_centre_size(pred_B4) - _centre_size(target_B4)).abs().sum(-1)
    giou_B = generalized_box_iou_loss(pred_B4, target_B4.clamp(0, 1), reduction="none")
    n = weight_B.sum().clamp(min=1.0)
    iou_B = box_iou(pred_B4.detach(), target_B4).diagonal()
    return ((l1_B + giou_B) * weight_B).sum() / n, (iou_B * weight_B).sum() / n


def _centre_size(box_B4: Tensor) -> Tensor:
    x0, y0, x1, y1 = box_B4.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
