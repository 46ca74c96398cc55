"""Hardware-independent cost accounting of a COPA step: FLOPs and activation bytes saved for backward, per component.

Counted, not timed, so the figures are exact and the same on every machine (and carry to the GPUs the toolkit is
for):

- **FLOPs**: the formulas of ``torch.utils.flop_counter`` (matrix products, convolutions, attention; elementwise
  ops count 0), forward and backward, as ``FlopCounterMode`` counts them, plus the same attention formulas for
  PyTorch's CPU attention kernel, which its counter leaves out (attention would count 0 on a CPU).
- **Saved bytes**: every tensor that autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``),
  counted once per storage (a view saved twice, or a tensor saved by two ops, costs its storage once), parameters
  excluded. That is the activation memory a training step holds at the end of its forward pass.

Components. The model marks its passes with ``component(name)`` (also a ``torch.profiler`` label, so a profiler
trace shows the same names). A forward op is charged to the innermost open component; a backward op to the
component whose forward pass created the autograd node that runs it (nodes are numbered in creation order, so the
boundaries between components are autograd sequence numbers recorded when a component opens or closes). The
backward of each pass is therefore charged to that pass, however autograd interleaves them. Work outside every
component is charged to ``OTHER``.

Outside ``count`` a ``component`` is only a profiler label: no hooks, no extra ops.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

OTHER = "other"
MOMENTUM = "momentum"  # the momentum towers and queue (``model/momentum.py``)

# PyTorch's counter knows the CUDA attention kernels but not the CPU one, so attention would count 0 on a CPU. The
# CPU kernel takes (query, key, value, ...) and its backward (grad_out, query, key, value, ...), as the CUDA ones do.
_aten = torch.ops.aten
CPU_ATTENTION = {
    _aten._scaled_dot_product_flash_attention_for_cpu: flop_registry[_aten._scaled_dot_product_flash_attention],
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: flop_registry[
        _aten._scaled_dot_product_flash_attention_backward
    ],
}

_counter: _Counter | None = None  # the count in progress, if any


@contextlib.contextmanager
def component(name: str) -> Iterator[None]:
    """Charge the work inside to ``name`` (innermost wins) while ``count`` runs; a profiler label always."""
    with torch.profiler.record_function(name):
        counter = _counter
        if counter is None:
            yield
            return
        counter.open(name)
        try:
            yield
        finally:
            counter.close()


@dataclass
class Cost:
    """What one counted call cost, per component."""

    flops: dict[str, int] = field(default_factory=dict)
    saved_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())

    @property
    def total_saved_bytes(self) -> int:
        return sum(self.saved_bytes.values())


class _Counter(FlopCounterMode):
    def __init__(self, params: set[tuple[torch.device, int]]) -> None:
        super().__init__(display=False)
        self.flop_registry.update(CPU_ATTENTION)
        self.params = params
        self.stack: list[str] = []
        self.bounds: list[int] = []  # autograd sequence numbers where the current component changed ...
        self.names: list[str] = []  # ... and the component from there on
        self.by_component: dict[str, int] = defaultdict(int)
        self.saved: dict[str, int] = defaultdict(int)
        self.storages: dict[tuple[torch.device, int], torch.UntypedStorage] = {}  # held: no address reuse

    # -- components ----------------------------------------------------------------------------------------------

    def open(self, name: str) -> None:
        self.stack.append(name)
        self._mark()

    def close(self) -> None:
        self.stack.pop()
        self._mark()

    def _mark(self) -> None:
        if not torch.is_grad_enabled():
            return  # no autograd node is created here, so backward never needs the boundary
        probe = (torch.zeros((), requires_grad=True) * 1.0).grad_fn  # takes the next sequence number
        self.bounds.append(probe._sequence_nr())
        self.names.append(self.stack[-1] if self.stack else OTHER)

    def current(self) -> str:
        node = torch._C._current_autograd_node()
        if node is None:  # forward
            return self.stack[-1] if self.stack else OTHER
        i = bisect.bisect_left(self.bounds, node._sequence_nr()) - 1  # the last boundary before the node
        return self.names[i] if i >= 0 else OTHER

    # -- FLOPs and saved tensors ---------------------------------------------------------------------------------

    def _count_flops(self, func_packet, out, args, kwargs):  # FlopCounterMode's hook, called for every op
        formula = self.flop_registry.get(func_packet)
        if formula is not None:
            self.by_component[self.current()] += formula(*args, **kwargs, out_val=out)
        return super()._count_flops(func_packet, out, args, kwargs)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = (tensor.device, storage.data_ptr())
        if storage.nbytes() and key not in self.params and key not in self.storages:
            self.storages[key] = storage
            self.saved[self.current()] += storage.nbytes()
        return tensor


def _param_storages(module: nn.Module | None) -> set[tuple[torch.device, int]]:
    if module is None:
        return set()
    tensors = [*module.parameters(), *module.buffers()]
    return {(t.device, t.untyped_storage().data_ptr()) for t in tensors}


def count(fn: Callable[[], object], module: nn.Module | None = None) -> Cost:
    """Run ``fn()`` (a forward, or a forward and backward) and count its cost per component.

    ``module``'s parameters and buffers are not activations: their storages are not counted as saved bytes.
    """
    global _counter
    if _counter is not None:
        raise RuntimeError("cost.count does not nest")
    counter = _Counter(_param_storages(module))
    _counter = counter
    try:
        with counter, torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            fn()
    finally:
        _counter = None
    assert sum(counter.by_component.values()) == counter.get_total_flops()
    return Cost(dict(counter.by_component), dict(counter.saved))
