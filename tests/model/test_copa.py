"""The whole COPA model on the tiny preset: every path's shapes, what retrieval may see, where gradients go."""

import dataclasses
import math

import pytest
import torch

from model.config import COPAConfig, LossConfig, TextConfig, VisionConfig, keep_count
from model.copa import COPA, ITC_TOWERS
from model.presets import base, small, tiny
from model.utils import seed_everything

LOSSES = ("loss_itc", "loss_itm", "loss_mlm", "loss_prefixlm", "loss_pta")


def tiny_with(
    itc_image_path="cls_query", keep_ratios=(0.5,), detect_layers=(2,), itc_keep_ratio=0.1, **loss
) -> COPAConfig:
    cfg = tiny()
    vision = dataclasses.replace(cfg.vision, keep_ratios=keep_ratios, detect_layers=detect_layers)
    loss = dataclasses.replace(cfg.loss, **loss)
    return dataclasses.replace(
        cfg, vision=vision, loss=loss, itc_image_path=itc_image_path, itc_keep_ratio=itc_keep_ratio
    )


@pytest.mark.parametrize("itc_image_path", ["cls_query", "text_query", "unpruned"])
@pytest.mark.parametrize("keep_ratios", [(0.5,), (1.0,)])
def test_training_forward_returns_every_loss_finite(make_batch, itc_image_path, keep_ratios):
    seed_everything(0)
    cfg = tiny_with(itc_image_path, keep_ratios)
    out = COPA(cfg)(make_batch(cfg, labelled=5))
    for key in ("loss", *LOSSES):
        assert out[key].dim() == 0 and torch.isfinite(out[key]), key
    K = cfg.vision.keep_counts()[0]
    N = cfg.vision.num_patches
    assert out["visual_tokens"].item() == (K + 2 if K < N else N + 1)
    # the retrieval path keeps its own (smaller) share of the patches; the text-query ablation reuses the fusion tail
    K_itc = {"cls_query": keep_count(cfg.itc_keep_ratio, N), "text_query": K, "unpruned": N}[itc_image_path]
    assert out["itc_visual_tokens"].item() == (K_itc + 2 if K_itc < N else N + 1)
    assert out["pta_samples"].item() == 5
    expected = sum(out[k] for k in LOSSES)  # unit weights
    torch.testing.assert_close(out["loss"].detach(), expected)


def test_two_detect_layers_momentum_queue_and_a_single_pair(make_batch):
    seed_everything(0)
    cfg = tiny_with(detect_layers=(1, 3), keep_ratios=(0.5, 0.5), itc_queue_size=16)
    model = COPA(cfg)
    batch = make_batch(cfg)
    before = model.momentum.towers.vision.detectors[0].proj_patch.weight.clone()
    model.vision.detectors[0].proj_patch.weight.data.add_(1.0)
    out = model(batch)
    assert all(torch.isfinite(out[k]) for k in LOSSES)
    assert out["visual_tokens"].item() == cfg.vision.keep_counts()[-1] + 2
    assert model.momentum.queue_ptr.item() == 8
    after = model.momentum.towers.vision.detectors[0].proj_patch.weight
    torch.testing.assert_close(after, before + (1 - cfg.loss.itc_momentum))  # the EMA moved toward the online one
    single = {k: v[:1] for k, v in batch.items()}
    assert torch.isfinite(COPA(tiny_with())(single)["loss"])


def test_inference_api_shapes(make_batch):
    seed_everything(0)
    cfg = tiny_with(detect_layers=(1, 2), keep_ratios=(0.5, 0.5))
    model = COPA(cfg).eval()
    batch = make_batch(cfg, num=4)
    image, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
    with torch.inference_mode():
        img, txt = model.encode_image(image), model.encode_text(ids, mask)
        assert img.shape == txt.shape == (4, cfg.embed_dim)
        torch.testing.assert_close(img.norm(dim=-1), torch.ones(4))
        score = model.itm_score(image, ids, mask)
        assert score.shape == (4,) and torch.all((score >= 0) & (score <= 1))
        fused, _ = model.fused_states(image, ids, mask)
        assert fused.shape == (4, ids.shape[1], cfg.text.hidden)
        det = model.detect(image, ids, mask)
        assert [lg.shape for lg in det.logits] == [(4, 16), (4, 8)]
        assert [k.shape for k in det.kept_idx] == [(4, 8), (4, 4)]
        caption = model.generate(image, max_len=6)
        assert caption.shape[0] == 4 and 1 <= caption.shape[1] <= 6
        continued = model.generate(image, max_len=3, prefix_ids=ids[:, :3])
        assert continued.shape[0] == 4 and continued.shape[1] <= 3


def _itc_image_embedding(model, batch):
    """The image embedding that ITC uses inside the training forward, captured at its projection."""
    seen = []
    handle = model.itc_vision_proj.register_forward_hook(lambda mod, args, out: seen.append(out.detach()))
    model(batch)
    handle.remove()
    return seen[0]


@pytest.mark.parametrize("itc_image_path", ["cls_query", "unpruned"])
def test_retrieval_does_not_see_the_paired_text_but_the_fusion_path_does(make_batch, itc_image_path):
    seed_everything(0)
    cfg = tiny_with(itc_image_path)
    model = COPA(cfg).eval()
    batch = make_batch(cfg)
    other = dict(batch, input_ids=batch["input_ids"].roll(1, dims=0), attention_mask=batch["attention_mask"].roll(1, 0))
    torch.testing.assert_close(_itc_image_embedding(model, batch), _itc_image_embedding(model, other), rtol=0, atol=0)
    with torch.no_grad():
        image = batch["image"]
        torch.testing.assert_close(
            model.encode_image(image, batch["input_ids"], batch["attention_mask"]),
            model.encode_image(image, other["input_ids"], other["attention_mask"]),
            rtol=0,
            atol=0,
        )
        _, vis_a = model.fused_states(image, batch["input_ids"], batch["attention_mask"])
        _, vis_b = model.fused_states(image, other["input_ids"], other["attention_mask"])
    assert not torch.equal(vis_a.tokens, vis_b.tokens), "the text-aware path depends on the text"
    assert not torch.equal(vis_a.logits[0], vis_b.logits[0])


def test_the_text_query_ablation_does_see_the_text(make_batch):
    seed_everything(0)
    cfg = tiny_with("text_query")
    model = COPA(cfg).eval()
    batch = make_batch(cfg)
    other = dict(batch, input_ids=batch["input_ids"].roll(1, dims=0), attention_mask=batch["attention_mask"].roll(1, 0))
    assert not torch.equal(_itc_image_embedding(model, batch), _itc_image_embedding(model, other))
    with pytest.raises(ValueError, match="text_query"):
        model.encode_image(batch["image"])


def _detector_grad(cfg, batch):
    seed_everything(0)
    model = COPA(cfg)
    model(batch)["loss"].backward()
    grads = [p.grad for p in model.vision.detectors[0].parameters()]
    return sum(0.0 if g is None else g.abs().sum().item() for g in grads)


@pytest.mark.parametrize("only", ["w_itc", "w_itm", "w_mlm", "w_prefixlm", "w_pta"])
def test_every_loss_alone_reaches_the_detector(make_batch, only):
    weights = {w: 0.0 for w in ("w_itc", "w_itm", "w_mlm", "w_prefixlm", "w_pta")} | {only: 1.0}
    cfg = tiny_with(**weights)
    assert _detector_grad(cfg, make_batch(cfg)) > 0


def test_without_pta_and_without_pruning_the_detector_gets_no_gradient(make_batch):
    # The control for the test above: at keep ratio 1.0 there is no fused token, so only PTA can teach the detector.
    cfg = tiny_with(keep_ratios=(1.0,), itc_keep_ratio=None, w_pta=0.0)
    assert _detector_grad(cfg, make_batch(cfg)) == 0.0
    cfg = tiny_with(keep_ratios=(1.0,), itc_keep_ratio=None)
    assert _detector_grad(cfg, make_batch(cfg)) > 0
    # the retrieval path prunes with its own keep ratio, so ITC alone reaches the detector through its fused token
    cfg = tiny_with(keep_ratios=(1.0,), itc_keep_ratio=0.25, w_pta=0.0, w_itm=0.0, w_mlm=0.0, w_prefixlm=0.0)
    assert _detector_grad(cfg, make_batch(cfg)) > 0


def test_pta_of_a_batch_without_labels_is_zero_not_nan(make_batch):
    seed_everything(0)
    cfg = tiny_with()
    out = COPA(cfg)(make_batch(cfg, labelled=0))
    assert out["loss_pta"].item() == 0.0 and not math.isnan(out["loss"].item())
    assert out["pta_samples"].item() == 0


def test_presets_are_valid_and_consistent():
    for make in (tiny, small, base):
        cfg = make()
        assert cfg.vision.img_size % cfg.vision.patch_size == 0
        assert cfg.text.max_len <= cfg.text.max_position_embeddings
    assert base().vision.model_name == "vit_base_patch16_clip_quickgelu_224"  # OpenAI's CLIP ViT-B/16
    assert (base().text.text_layers, base().text.fusion_layers, base().text.decoder_layers) == (6, 6, 12)


@pytest.mark.slow
def test_base_builds_with_the_mplug_contrastive_recipe():
    """Momentum towers (frozen EMA copies of the ITC towers) and a 65,536-feature queue per modality, as mPLUG
    pretrains; everything else stays trainable."""
    cfg = base()
    assert (cfg.loss.itc_queue_size, cfg.loss.itc_momentum, cfg.loss.itc_distill_alpha) == (65_536, 0.995, 0.4)
    model = COPA(cfg)
    m = model.momentum
    assert m.image_queue.shape == m.text_queue.shape == (cfg.embed_dim, 65_536)
    assert sorted(m.towers) == sorted(ITC_TOWERS)
    for name in ITC_TOWERS:
        online, copy = getattr(model, name), m.towers[name]
        assert [p.shape for p in copy.parameters()] == [p.shape for p in online.parameters()]
        assert not any(p.requires_grad for p in copy.parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if not n.startswith("momentum.")}


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: VisionConfig(keep_ratios=(0.0,)), "keep_ratios"),
        (lambda: VisionConfig(keep_ratios=(1.5,)), "keep_ratios"),
        (lambda: VisionConfig(detect_layers=(6, 3), keep_ratios=(0.5, 0.5)), "detect_layers"),
        (lambda: VisionConfig(detect_layers=(12,)), "detect_layers"),
        (lambda: VisionConfig(detect_layers=(3, 6)), "keep_ratios"),
        (lambda: VisionConfig(img_size=250), "img_size"),
        (lambda: VisionConfig(embed_dim=100), "embed_dim"),
        (lambda: TextConfig(hidden=100), "hidden"),
        (lambda: TextConfig(max_len=600), "max_len"),
        (lambda: TextConfig(mask_id=40000), "mask_id"),
        (lambda: TextConfig(mask_id=0), "pad_id"),
        (lambda: LossConfig(tau=1.0), "tau"),
        (lambda: LossConfig(w_pta=-1.0), "w_pta"),
        (lambda: LossConfig(mlm_prob=0.0), "mlm_prob"),
        (lambda: LossConfig(temp_init=1.0), "temp_init"),
        (lambda: LossConfig(itc_queue_size=-1), "itc_queue_size"),
        (lambda: COPAConfig(itc_image_path="peek"), "itc_image_path"),
        (lambda: COPAConfig(itm_negatives="none"), "itm_negatives"),
        (lambda: COPAConfig(itm_negative_pool="world"), "itm_negative_pool"),
        (lambda: COPAConfig(itm_negative_pool="global", itm_negatives="requery"), "itm_negatives"),
        (lambda: COPAConfig(itc_keep_ratio=0.0), "itc_keep_ratio"),
        (lambda: COPAConfig(embed_dim=0), "embed_dim"),
        (lambda: COPAConfig(query_pool="max"), "query_pool"),
    ],
)
def test_config_errors_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_itc_pooling_takes_the_cls_token_or_the_mean_over_real_tokens(make_batch, pool):
    seed_everything(0)
    cfg = dataclasses.replace(tiny(), itc_pool=pool)
    model = COPA(cfg).eval()
    batch = make_batch(cfg, 4)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        states = model.text_encoder(ids, mask)
        padded = torch.cat([ids, torch.zeros_like(ids[:, :3])], 1)  # more padding must not move a mean
        longer = model.encode_text(padded, (padded != cfg.text.pad_id).long())
        got = model.encode_text(ids, mask)
    pooled = states[:, 0] if pool == "cls" else (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    torch.testing.assert_close(got, torch.nn.functional.normalize(model.itc_text_proj(pooled), dim=-1))
    torch.testing.assert_close(longer, got, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_the_detector_query_is_the_pooled_text_in_training_and_inference(make_batch, pool):
    seed_everything(0)
    cfg = dataclasses.replace(tiny(), query_pool=pool)
    model = COPA(cfg).eval()
    batch = make_batch(cfg, 4)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        states = model.text_encoder(ids, mask)
        pooled = states[:, 0] if pool == "cls" else (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        want = model.vision(batch["image"], model.query_proj(pooled))
        got = model.detect(batch["image"], ids, mask)
        padded = torch.cat([ids, torch.zeros_like(ids[:, :3])], 1)
        longer = model.detect(batch["image"], padded, (padded != cfg.text.pad_id).long())
    torch.testing.assert_close(got.logits[0], want.logits[0])
    torch.testing.assert_close(longer.logits[0], got.logits[0], atol=1e-5, rtol=1e-5)  # padding changes nothing


def test_a_fresh_text_encoder_gives_every_caption_the_same_cls_state(make_batch):
    """Why the from-scratch presets pool ITC by the mean: a new BERT's [CLS] state ignores the caption."""
    seed_everything(0)
    cfg = small()
    model = COPA(dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=100))).eval()
    batch = make_batch(model.cfg, 8)
    with torch.no_grad():
        states = model.text_encoder(batch["input_ids"], batch["attention_mask"])
    cos = lambda x: torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(x, dim=-1).t()  # noqa: E731
    off_diagonal = ~torch.eye(8, dtype=torch.bool)
    mask = batch["attention_mask"][..., None]
    assert cos(states[:, 0])[off_diagonal].min() > 0.999
    assert cos((states * mask).sum(1) / mask.sum(1))[off_diagonal].min() < 0.99


def test_loss_weights_scale_the_total(make_batch):
    weights = {"w_itc": 2.0, "w_itm": 0.5, "w_mlm": 3.0, "w_prefixlm": 0.25, "w_pta": 1.5}
    cfg = tiny_with(**weights)
    batch = make_batch(cfg, labelled=5)
    seed_everything(0)
    weighted = COPA(cfg)(batch)
    seed_everything(0)
    unit = COPA(tiny_with())(batch)  # the same weights and random draws, unit loss weights
    for key in LOSSES:  # the weights change the total only, not the losses themselves
        torch.testing.assert_close(weighted[key], unit[key])
    expected = sum(w * unit["loss_" + name[2:]] for name, w in weights.items())
    torch.testing.assert_close(weighted["loss"].detach(), expected)
    assert not torch.isclose(weighted["loss"], unit["loss"])
