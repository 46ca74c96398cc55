"""The collectives COPA's losses run over the default process group (DDP under torchrun); each is the identity in
one process, so the model code calls them unconditionally.

Every rank must call them at the same point with tensors of the same shape: the trainer drops partial batches, so
ranks hold equal batches, and text tensors are padded to the longest rank's length first (``pad_to_longest``).

Shape legend: B batch per rank, W world size, C = W * B.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def gather_all(x_B: Tensor) -> Tensor:
    """``x`` of every rank concatenated along dim 0 [C, ...], rank order, without gradients."""
    if world()[1] == 1:
        return x_B
    parts = [torch.empty_like(x_B) for _ in range(world()[1])]
    dist.all_gather(parts, x_B.contiguous())
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient for this rank's slice (a reduce-scatter).
    Written here because ``torch.distributed.nn.functional.all_gather`` is deprecated (torch 2.14) in favour of a
    private module; this uses only the public ``all_gather_into_tensor`` and ``reduce_scatter_tensor``, which nccl
    and gloo both implement."""

    @staticmethod
    def forward(ctx, x_B: Tensor) -> Tensor:
        x_B = x_B.contiguous()
        out_C = x_B.new_empty((world()[1] * x_B.shape[0], *x_B.shape[1:]))
        dist.all_gather_into_tensor(out_C, x_B)
        return out_C

    @staticmethod
    def backward(ctx, grad_C: Tensor) -> Tensor:
        grad_C = grad_C.contiguous()
        grad_B = grad_C.new_empty((grad_C.shape[0] // world()[1], *grad_C.shape[1:]))
        dist.reduce_scatter_tensor(grad_B, grad_C, op=dist.ReduceOp.SUM)
        return grad_B


def gather_with_grad(x_B: Tensor) -> Tensor:
    """``x`` of every rank concatenated along dim 0 [C, ...]; in backward each rank's slice receives the gradients
    of every rank's loss (summed), so a loss computed from the gathered tensor trains all ranks' inputs."""
    if world()[1] == 1:
        return x_B
    return _GatherWithGrad.apply(x_B)


def pad_to_longest(x_BT: Tensor, value: float) -> Tensor:
    """``x`` padded with ``value`` along dim 1 to the longest length any rank holds (gathering needs equal shapes)."""
    if world()[1] == 1:
        return x_BT
    length = torch.tensor([x_BT.shape[1]], device=x_BT.device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX)
    pad = int(length.item()) - x_BT.shape[1]
    if pad == 0:
        return x_BT
    return F.pad(x_BT, (0, 0) * (x_BT.dim() - 2) + (0, pad), value=value)
