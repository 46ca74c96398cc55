"""Momentum encoders and feature queues for ITC, as in ALBEF (arXiv 2107.07651) and mPLUG, used by COPA's ITC.

Off unless ``LossConfig.itc_queue_size > 0``. The momentum model is an exponential moving average of the towers
that produce ITC embeddings (image tower with its detectors, text encoder, query and ITC projections); its
embeddings fill two queues of past features that serve as extra negatives, and its similarities give soft targets
(momentum distillation, weight ``itc_distill_alpha``). Under DDP the features of every rank are gathered before
they are enqueued, so all ranks keep identical queues.

Shape legend: B batch, E embedding width, Q queue length, C = B + Q candidates.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from model.losses import soft_contrastive_loss


def gather_all(x_BE: Tensor) -> Tensor:
    """Concatenate ``x`` over the ranks of the default process group (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x_BE
    parts = [torch.empty_like(x_BE) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x_BE.contiguous())
    return torch.cat(parts, dim=0)


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

    def loss(self, img_BE: Tensor, txt_BE: Tensor, img_m_BE: Tensor, txt_m_BE: Tensor, temp: Tensor) -> Tensor:
        """ITC against the momentum features plus the queues, with momentum-distilled soft targets."""
        B = img_BE.shape[0]
        with torch.no_grad():
            img_all_EC = torch.cat([img_m_BE.t().to(self.image_queue.dtype), self.image_queue.clone()], dim=1)
            txt_all_EC = torch.cat([txt_m_BE.t().to(self.text_queue.dtype), self.text_queue.clone()], dim=1)
            hard_BC = torch.zeros(B, img_all_EC.shape[1], device=img_BE.device)
            hard_BC[:, :B] = torch.eye(B, device=img_BE.device)
            sim_i2t_m = img_m_BE.float() @ txt_all_EC / temp
            sim_t2i_m = txt_m_BE.float() @ img_all_EC / temp
            target_i2t = self.alpha * sim_i2t_m.softmax(dim=1) + (1.0 - self.alpha) * hard_BC
            target_t2i = self.alpha * sim_t2i_m.softmax(dim=1) + (1.0 - self.alpha) * hard_BC
        sim_i2t = img_BE.float() @ txt_all_EC / temp
        sim_t2i = txt_BE.float() @ img_all_EC / temp
        return soft_contrastive_loss(sim_i2t, sim_t2i, target_i2t, target_t2i)

    @torch.no_grad()
    def enqueue(self, img_m_BE: Tensor, txt_m_BE: Tensor) -> None:
        img_m_BE, txt_m_BE = gather_all(img_m_BE), gather_all(txt_m_BE)
        Q = self.image_queue.shape[1]
        img_m_BE, txt_m_BE = img_m_BE[-Q:], txt_m_BE[-Q:]  # a batch longer than the queue keeps its newest rows
        idx_B = (self.queue_ptr + torch.arange(img_m_BE.shape[0], device=img_m_BE.device)) % Q
        self.image_queue[:, idx_B] = img_m_BE.t().to(self.image_queue.dtype)
        self.text_queue[:, idx_B] = txt_m_BE.t().to(self.text_queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + img_m_BE.shape[0]) % Q)
