"""Momentum encoders and feature queues for ITC, as in ALBEF (arXiv 2107.07651) and mPLUG, used by COPA's ITC.

Off unless ``LossConfig.itc_queue_size > 0``. The momentum model is an exponential moving average of the towers
that produce ITC embeddings (image tower with its detectors, text encoder, query and ITC projections); its
embeddings fill two queues of past features that serve as extra negatives, and its similarities give soft targets
(momentum distillation, weight ``itc_distill_alpha``). Under DDP the features of every rank are gathered before
they are enqueued, so all ranks keep identical queues without DDP broadcasting them (the trainer turns buffer
broadcasts off: at ``base`` the queues are 128 MiB); with ``itc_global_batch`` those gathered features are also the
current step's candidates.

Shape legend: B batch per rank, C = world size x B, E embedding width, Q queue length, K candidates (B or C, + Q).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.distributed import gather_all, world
from model.losses import soft_contrastive_loss


class MomentumITC(nn.Module):
    """EMA copies of the ITC towers plus image and text feature queues."""

    def __init__(self, towers: dict[str, nn.Module], embed_dim: int, queue_size: int, momentum: float, alpha: float):
        super().__init__()
        self.towers = nn.ModuleDict({name: copy.deepcopy(module) for name, module in towers.items()})
        self.towers.requires_grad_(False)
        self.momentum = momentum
        self.alpha = alpha
        self.register_buffer("image_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, online: nn.Module) -> None:
        """theta_m <- m * theta_m + (1 - m) * theta for each tower, read from the same-named attribute of ``online``."""
        for name, tower in self.towers.items():
            for p_m, p in zip(tower.parameters(), getattr(online, name).parameters(), strict=True):
                p_m.mul_(self.momentum).add_(p.detach(), alpha=1.0 - self.momentum)

    def loss(
        self, img_BE: Tensor, txt_BE: Tensor, img_m_BE: Tensor, txt_m_BE: Tensor, temp: Tensor, global_batch: bool
    ) -> Tensor:
        """ITC against the momentum features plus the queues, with momentum-distilled soft targets; in training the
        momentum features of every rank are then enqueued. With ``global_batch`` the current candidates are every
        rank's momentum features, else this rank's only (ALBEF)."""
        B = img_BE.shape[0]
        with torch.no_grad():
            img_all_CE, txt_all_CE = (gather_all(img_m_BE), gather_all(txt_m_BE)) if self.training else (None, None)
            if global_batch and img_all_CE is not None:
                img_cand_CE, txt_cand_CE, offset = img_all_CE, txt_all_CE, world()[0] * B
            else:
                img_cand_CE, txt_cand_CE, offset = img_m_BE, txt_m_BE, 0
            img_cand_EK = torch.cat([img_cand_CE.t().to(self.image_queue.dtype), self.image_queue.clone()], dim=1)
            txt_cand_EK = torch.cat([txt_cand_CE.t().to(self.text_queue.dtype), self.text_queue.clone()], dim=1)
            hard_BK = torch.zeros(B, img_cand_EK.shape[1], device=img_BE.device)
            hard_BK[torch.arange(B), offset + torch.arange(B)] = 1.0
            sim_i2t_m = img_m_BE.float() @ txt_cand_EK / temp
            sim_t2i_m = txt_m_BE.float() @ img_cand_EK / temp
            target_i2t = self.alpha * sim_i2t_m.softmax(dim=1) + (1.0 - self.alpha) * hard_BK
            target_t2i = self.alpha * sim_t2i_m.softmax(dim=1) + (1.0 - self.alpha) * hard_BK
        sim_i2t = img_BE.float() @ txt_cand_EK / temp
        sim_t2i = txt_BE.float() @ img_cand_EK / temp
        loss = soft_contrastive_loss(sim_i2t, sim_t2i, target_i2t, target_t2i)
        if img_all_CE is not None:
            self.enqueue(img_all_CE, txt_all_CE)
        return loss

    @torch.no_grad()
    def enqueue(self, img_m_CE: Tensor, txt_m_CE: Tensor) -> None:
        """Write the momentum features of every rank (gathered by the caller) at the queue pointer."""
        Q = self.image_queue.shape[1]
        img_m_CE, txt_m_CE = img_m_CE[-Q:], txt_m_CE[-Q:]  # a batch longer than the queue keeps its newest rows
        idx_C = (self.queue_ptr + torch.arange(img_m_CE.shape[0], device=img_m_CE.device)) % Q
        self.image_queue[:, idx_C] = img_m_CE.t().to(self.image_queue.dtype)
        self.text_queue[:, idx_C] = txt_m_CE.t().to(self.text_queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + img_m_CE.shape[0]) % Q)
