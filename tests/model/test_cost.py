"""Cost accounting (model/cost.py) against hand counts, and what it says about COPA's training step."""

import dataclasses

import pytest
import torch
from timm.models.vision_transformer import Block
from torch import nn

from jobs.bench.model_cost import IDEAL, configure
from model import cost
from model.copa import COPA
from model.presets import tiny
from model.utils import seed_everything

F32 = 4  # bytes


def test_a_linear_layer_costs_three_products_and_saves_its_input():
    B, IN, OUT = 3, 5, 7
    first, second = nn.Linear(IN, OUT), nn.Linear(OUT, 2, bias=False)
    x = torch.randn(B, IN, requires_grad=True)

    def step():
        with cost.component("first"):
            h = first(x)
        with cost.component("second"):
            y = second(h.tanh())
        y.sum().backward()

    counted = cost.count(step, nn.ModuleList([first, second]))
    # forward 2*B*IN*OUT FLOPs; backward the same twice (gradient of the input, gradient of the weight), each
    # charged to the layer whose forward it belongs to
    assert counted.flops == {"first": 3 * 2 * B * IN * OUT, "second": 3 * 2 * B * OUT * 2}
    # first saves x; second saves tanh's output once (tanh saves it for its own backward, the layer as its input);
    # weights are parameters, not activations
    assert counted.saved_bytes == {"first": B * IN * F32, "second": B * OUT * F32}


def test_a_transformer_block_matches_the_hand_count():
    B, N, D, H = 2, 10, 16, 4
    block = Block(D, H, mlp_ratio=4.0, qkv_bias=True).eval()  # eval: no dropout ops
    x = torch.randn(B, N, D, requires_grad=True)
    counted = cost.count(lambda: block(x).sum().backward(), block)
    # linears: qkv 3D^2 + proj D^2 + fc1 4D^2 + fc2 4D^2 = 12 D^2 per token, 2 FLOPs each, x3 with backward;
    # attention: QK^T and AV forward (2 * 2BN^2D), backward recomputes QK^T and runs four products (5 * 2BN^2D)
    linear = 3 * 2 * B * N * 12 * D * D
    attention = (2 + 5) * 2 * B * N * N * D
    assert counted.total_flops == linear + attention
    # saved for backward, in floats: the block input, norm1 out, qkv out (3D; q, k, v are views of it), the
    # attention output (laid out in token order by the kernel, so proj reads it without a copy), the residual sum,
    # norm2 out, fc1 out and GELU out (4D each): 16 BND; plus both norms' mean and rstd (4 BN) and attention's
    # log-sum-exp (B H N)
    assert counted.total_saved_bytes == (16 * B * N * D + 4 * B * N + B * H * N) * F32


def tiny_copa(**changes) -> COPA:
    seed_everything(0)
    cfg = tiny()
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, dropout=0.0), **changes)
    return COPA(cfg)


def count_step(model: COPA, batch: dict, **setting) -> cost.Cost:
    """One counted training step; its outputs are left in ``model.last_out``."""
    row = {"itc_image_path": "cls_query", "itm_negatives": "reuse", "itc_keep_ratio": 0.25, "checkpointing": "none"}
    configure(model, {**row, "layer": 2, "keep_ratio": 0.5, **setting})
    torch.manual_seed(0)

    def step():
        model.last_out = model(batch)
        model.last_out["loss"].backward()

    return cost.count(step, model)


def test_keep_one_costs_the_same_on_every_path_and_cost_falls_with_the_keep_ratio(make_batch):
    model = tiny_copa()
    batch = make_batch(model.cfg)
    unpruned = count_step(model, batch, keep_ratio=1.0, **IDEAL)
    for path in ("cls_query", "text_query", "unpruned"):  # identity detectors: one tail, whatever the path
        same = count_step(model, batch, keep_ratio=1.0, itc_image_path=path, itc_keep_ratio=None)
        assert (same.total_flops, same.total_saved_bytes) == (unpruned.total_flops, unpruned.total_saved_bytes)
    steps = [count_step(model, batch, keep_ratio=keep, **IDEAL) for keep in (1.0, 0.75, 0.5, 0.25)]
    flops = [s.total_flops for s in steps]
    saved = [s.total_saved_bytes for s in steps]
    assert flops == sorted(flops, reverse=True) and len(set(flops)) == 4
    assert saved == sorted(saved, reverse=True) and len(set(saved)) == 4


def test_every_pass_is_charged_to_its_component(make_batch):
    model = tiny_copa()
    batch = make_batch(model.cfg)
    requery = count_step(model, batch, itm_negatives="requery")
    expected = {"vit_shared", "vit_tail.fusion", "vit_tail.itc", "vit_tail.itm_negatives", "detector", "heads"}
    expected |= {"text_encoder.caption", "text_encoder.masked", "text_encoder.prefix"}
    expected |= {"fusion.itm", "fusion.mlm", "fusion.prefix", "decoder"}
    assert expected <= {name for name, flops in requery.flops.items() if flops > 0}
    reuse = count_step(model, batch)
    assert "vit_tail.itm_negatives" not in reuse.flops  # reused negatives run no tail
    # a requeried negative runs the fusion tail once per negative: 2B tails against the positives' B
    assert requery.flops["vit_tail.itm_negatives"] == 2 * requery.flops["vit_tail.fusion"]
    # the retrieval path keeping fewer patches than the fusion path costs less than it
    assert 0 < reuse.flops["vit_tail.itc"] < reuse.flops["vit_tail.fusion"]


@pytest.mark.parametrize("checkpointing", ["vision", "text", "all"])
def test_activation_checkpointing_gives_the_same_losses_and_gradients_for_less_memory(make_batch, checkpointing):
    batch = make_batch(tiny())
    plain, ckpt = tiny_copa(), tiny_copa()
    plain_cost = count_step(plain, batch)
    ckpt_cost = count_step(ckpt, batch, checkpointing=checkpointing)
    for key in ("loss", "loss_itc", "loss_itm", "loss_mlm", "loss_prefixlm", "loss_pta"):
        torch.testing.assert_close(ckpt.last_out[key], plain.last_out[key], rtol=0, atol=0)
    grads = 0
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
            grads += 1
    assert grads > 50
    assert ckpt_cost.total_saved_bytes < plain_cost.total_saved_bytes
    assert ckpt_cost.total_flops > plain_cost.total_flops  # the recomputed forward


def test_the_momentum_queue_saves_its_candidate_matrices_for_backward(make_batch):
    """The momentum towers run without gradients: all the momentum component saves is the two [E, B + Q] candidate
    matrices the online embeddings are multiplied with, plus a few [B, B + Q] similarity and target rows. The bench
    reports it per step, since the queue part does not grow with the batch."""
    seed_everything(0)
    Q, B = 1024, 4
    cfg = tiny()
    cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, itc_queue_size=Q))
    model = COPA(cfg).train()
    batch = make_batch(cfg, num=B)
    counted = cost.count(lambda: model(batch)["loss"].backward(), model)
    E, K = cfg.embed_dim, Q + B
    candidates = 2 * E * K * F32
    assert candidates <= counted.saved_bytes[cost.MOMENTUM] <= candidates + 8 * B * K * F32
    assert counted.flops[cost.MOMENTUM] > 0  # the momentum towers' forward
