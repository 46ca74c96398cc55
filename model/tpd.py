"""The Text-aware Patch Detector (TPD) of COPA (Jiang et al., ACM MM 2023, arXiv 2308.03475), DESIGN section 7.

The detector sits between two ViT blocks. It scores every patch token against a query vector (the projected text
[CLS] on the fusion path, the image [CLS] on the retrieval path), keeps the top K = ceil(keep_ratio * N) patches in
their original order and fuses the other N - K into one token, weighted by a softmax of their scores normalized
over the dropped patches only (the fused "inattentive" token of EViT). The sequence [CLS, patches...] (N + 1
tokens) becomes [CLS, kept..., fused] (K + 2 tokens), so every later block, the fusion layers and the decoder see
fewer visual tokens.

Split as timm splits ``PatchDropout``: ``select_patches`` is a pure function of (tokens, scores, K) that returns the
kept indices; ``TextAwarePatchDetector`` is a thin module that computes the scores and calls it.

Gradients. Top-K is not differentiable, so the detector learns from two signals: PTA supervises the logits
directly, and every other loss reaches the logits through the fused token, whose softmax weights are
differentiable functions of the dropped patches' scores.

keep_ratio 1.0 is an exact identity: the input tensor comes back unchanged (no fused token), with all indices.

Shape legend: B batch, N patch tokens entering the detector, K kept, D token width, Q query width, H head width.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import keep_count


def select_patches(x_BND: Tensor, logits_BN: Tensor, keep: int) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the ``keep`` highest-scoring patches in their original order and fuse the rest into one token.

    Returns ``(out, kept_idx_BK, fuse_weights_BN)``: ``out`` is [B, K + 1, D] (kept tokens, then the fused one),
    ``kept_idx_BK`` is sorted ascending, ``fuse_weights_BN`` holds each dropped patch's weight in the fused token
    (zero at kept patches, summing to 1 over N). With ``keep >= N`` nothing is dropped: ``out`` is ``x_BND``
    itself, the indices are 0..N-1 and the weights are all zero.
    """
    B, N, D = x_BND.shape
    if logits_BN.shape != (B, N):
        raise ValueError(f"logits_BN must have shape {(B, N)}, got {tuple(logits_BN.shape)}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if keep >= N:
        all_idx_BN = torch.arange(N, device=x_BND.device).expand(B, N)
        return x_BND, all_idx_BN, torch.zeros_like(logits_BN)

    # topk picks the set; sorting restores the raster order so kept tokens keep their spatial layout.
    kept_idx_BK = logits_BN.topk(keep, dim=1, sorted=False).indices.sort(dim=1).values
    kept_BKD = x_BND.gather(1, kept_idx_BK.unsqueeze(-1).expand(B, keep, D))

    kept_mask_BN = torch.zeros_like(logits_BN, dtype=torch.bool).scatter_(1, kept_idx_BK, True)
    # Softmax over the dropped patches only: kept ones get -inf, hence weight exactly 0.
    fuse_weights_BN = logits_BN.float().masked_fill(kept_mask_BN, float("-inf")).softmax(dim=1)
    fused_B1D = torch.einsum("bn,bnd->bd", fuse_weights_BN.to(x_BND.dtype), x_BND).unsqueeze(1)
    return torch.cat([kept_BKD, fused_B1D], dim=1), kept_idx_BK, fuse_weights_BN


def detector_boxes(logits_BS: Tensor, idx_BS: Tensor, grid: int, threshold: float = 0.5) -> Tensor:
    """[B, 4] normalized x0, y0, x1, y1 around the patches whose detector probability is at least ``threshold``
    (``logits_BS`` over the patches ``idx_BS`` of a ``grid`` x ``grid`` image), or around the likeliest patch where
    none is: the detector's own guess of where its text's referent lies."""
    B, N = logits_BS.shape[0], grid * grid
    probs_BN = torch.full((B, N), -1.0, device=logits_BS.device).scatter(1, idx_BS, logits_BS.float().sigmoid())
    hit_BN = probs_BN >= threshold
    hit_BN |= ~hit_BN.any(1, keepdim=True) & F.one_hot(probs_BN.argmax(1), N).bool()
    hit_BGG = hit_BN.view(B, grid, grid)
    at = torch.arange(grid, device=logits_BS.device)
    edges = []
    for lines_BG in (hit_BGG.any(1), hit_BGG.any(2)):  # columns (x), then rows (y)
        edges.append((torch.where(lines_BG, at, grid).min(1).values, torch.where(lines_BG, at, -1).max(1).values + 1))
    (x0, x1), (y0, y1) = edges
    return torch.stack([x0, y0, x1, y1], dim=1).float() / grid


class Detection(NamedTuple):
    """What one detector returns. ``kept_idx`` indexes the N patches that entered this detector."""

    tokens: Tensor  # [B, K + 2, D]: CLS, kept patches, fused token ([B, N + 1, D], the input, when K == N)
    kept_idx: Tensor  # [B, K] sorted
    logits: Tensor  # [B, N] relevance of each entering patch to the query
    fuse_weights: Tensor  # [B, N] weight of each dropped patch in the fused token (zero where kept)


class TextAwarePatchDetector(nn.Module):
    """Scores patches against a query: logits = <W_p LN(x_patch), W_q LN(q)> / sqrt(H), then ``select_patches``.

    A bilinear score with its own layer norms keeps the detector a small head (2 * D * H parameters) that works
    for either query: the projected text [CLS] (fusion path) or the image [CLS] (retrieval path).
    """

    def __init__(self, dim: int, query_dim: int, width: int, keep_ratio: float) -> None:
        super().__init__()
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must lie in (0, 1], got {keep_ratio}")
        self.keep_ratio = keep_ratio
        self.width = width
        self.norm = nn.LayerNorm(dim)
        self.proj_patch = nn.Linear(dim, width)
        self.norm_query = nn.LayerNorm(query_dim)
        self.proj_query = nn.Linear(query_dim, width)

    def scores(self, patches_BND: Tensor, query_BQ: Tensor) -> Tensor:
        """Relevance logits [B, N] of each patch to the query."""
        p_BNH = self.proj_patch(self.norm(patches_BND))
        q_BH = self.proj_query(self.norm_query(query_BQ))
        return torch.einsum("bnh,bh->bn", p_BNH, q_BH) / math.sqrt(self.width)

    def forward(self, x_BND: Tensor, query_BQ: Tensor, keep_ratio: float | None = None) -> Detection:
        """``x_BND`` is [CLS, patches...] with N + 1 tokens; see ``Detection`` for the result.

        ``keep_ratio`` overrides the detector's own for this call (the retrieval path keeps fewer patches).
        """
        cls_B1D, patches_BND = x_BND[:, :1], x_BND[:, 1:]
        logits_BN = self.scores(patches_BND, query_BQ)
        keep = keep_count(self.keep_ratio if keep_ratio is None else keep_ratio, patches_BND.shape[1])
        selected, kept_idx_BK, fuse_weights_BN = select_patches(patches_BND, logits_BN, keep)
        if selected is patches_BND:  # identity: hand back the very input tensor
            return Detection(x_BND, kept_idx_BK, logits_BN, fuse_weights_BN)
        return Detection(torch.cat([cls_B1D, selected], dim=1), kept_idx_BK, logits_BN, fuse_weights_BN)
