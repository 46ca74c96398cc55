"""The model pieces of fine-tuning: task losses, the captioning targets, beam search, weights at another size."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from timm.layers import resample_abs_pos_embed

from model.checkpoint import load_weights
from model.config import TASK_LOSSES, LossConfig, TextConfig
from model.copa import COPA
from model.evaluate import EvalSet, rerank_with_itm
from model.losses import IGNORE, caption_split
from model.presets import tiny
from model.tokenizer import CaptionTokenizer, build_wordpiece
from model.utils import seed_everything


def tiny_task(task: str, **vision) -> object:
    cfg = tiny()
    return dataclasses.replace(
        cfg,
        vision=dataclasses.replace(cfg.vision, **vision),
        loss=dataclasses.replace(cfg.loss, **TASK_LOSSES[task]),
    )


@pytest.mark.parametrize(
    ("task", "losses"),
    [
        ("pretrain", {"loss_itc", "loss_itm", "loss_mlm", "loss_prefixlm", "loss_pta"}),
        ("retrieval", {"loss_itc", "loss_itm"}),
        ("caption", {"loss_caption"}),
        ("vqa", {"loss_vqa"}),
        ("grounding", {"loss_ground", "loss_pta"}),
    ],
)
def test_a_task_computes_its_losses_and_no_other(make_batch, task, losses):
    seed_everything(0)
    cfg = tiny_task(task)
    model = COPA(cfg)
    out = model(make_batch(cfg, labelled=4))
    assert {k for k in out if k.startswith("loss_")} == losses
    torch.testing.assert_close(out["loss"], sum(out[k] for k in losses))
    out["loss"].backward()
    # the heads of the losses not computed get no gradient: the caption task leaves ITM, MLM and ITC untouched
    untouched = {"retrieval": ["mlm_head", "lm_head", "decoder", "box_head"],
                 "caption": ["itm_head", "mlm_head", "itc_text_proj", "box_head"],
                 "vqa": ["itm_head", "mlm_head", "itc_text_proj", "box_head"],
                 "grounding": ["itm_head", "mlm_head", "lm_head", "decoder", "itc_text_proj"],
                 "pretrain": ["box_head"]}[task]  # fmt: skip
    for name in untouched:
        assert all(p.grad is None for p in getattr(model, name).parameters()), name
    assert all(p.grad is not None for p in model.vision.vit.blocks[0].parameters())


def test_all_loss_weights_zero_is_refused():
    with pytest.raises(ValueError, match="every loss weight is 0"):
        LossConfig(**dict.fromkeys(TASK_LOSSES["pretrain"], 0.0))


def test_caption_targets_are_the_whole_caption_after_the_prompt():
    cfg = TextConfig(vocab_size=200)
    cls, sep, pad = cfg.cls_id, cfg.sep_id, cfg.pad_id
    ids = torch.tensor([[cls, 7, 8, 9, sep], [cls, 11, sep, pad, pad]])
    split = caption_split(ids, (ids != pad).long(), cfg, torch.tensor([[cls, 30, 31]]))
    assert split.prefix_ids.tolist() == [[cls, 30, 31], [cls, 30, 31]]
    assert split.prefix_mask.tolist() == [[1, 1, 1], [1, 1, 1]]
    assert split.decoder_ids.tolist() == [[cls, 7, 8, 9], [cls, 11, pad, pad]]  # [BOS] = [CLS], then the words
    assert split.decoder_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert split.targets.tolist() == [[7, 8, 9, sep], [11, sep, IGNORE, IGNORE]]
    alone = caption_split(ids, (ids != pad).long(), cfg)  # no prompt: [CLS] alone
    assert alone.prefix_ids.tolist() == [[cls], [cls]] and alone.targets.tolist() == split.targets.tolist()


def _tiny_vocab_model() -> COPA:
    """The tiny model with six tokens, so that every caption of three tokens can be enumerated."""
    cfg = tiny()
    text = dataclasses.replace(cfg.text, vocab_size=6, pad_id=0, cls_id=1, sep_id=2, mask_id=3, bos_id=1)
    seed_everything(3)
    model = COPA(dataclasses.replace(cfg, text=text)).eval()
    with torch.no_grad():  # sharper next-token distributions than the init's near-uniform ones
        model.text_encoder.embeddings.word_embeddings.weight.mul_(40.0)
    return model


def _best_by_enumeration(model: COPA, image: torch.Tensor, max_len: int) -> tuple[list[int], float]:
    """The caption of highest summed log-probability among all captions of at most ``max_len`` tokens, by brute
    force: every sequence of non-[SEP] tokens ending in [SEP], or cut at ``max_len``."""
    t = model.cfg.text
    prefix = torch.tensor([[t.cls_id]])
    memory, memory_mask = model._prefix_memory(image, prefix, torch.ones_like(prefix))
    words = [v for v in range(t.vocab_size) if v != t.sep_id]
    best, best_score = None, float("-inf")
    for length in range(1, max_len + 1):
        for body in itertools.product(words, repeat=length - 1):
            for last in range(t.vocab_size) if length == max_len else [t.sep_id]:
                seq = [t.bos_id, *body, last]
                score = 0.0
                for i in range(1, len(seq)):
                    logits = model._next_logits(torch.tensor([seq[:i]]), memory, memory_mask)
                    score += logits.log_softmax(-1)[0, seq[i]].item()
                if score > best_score:
                    best, best_score = seq[1:], score
    return best, best_score


@torch.no_grad()
def test_beam_search_wide_enough_finds_the_best_caption_of_all():
    model = _tiny_vocab_model()
    images = torch.randn(3, 3, 32, 32)
    found = model.generate(images, max_len=3, beams=36, length_penalty=0.0)  # 36 >= 6 ** 2: nothing is pruned
    for b in range(3):
        best, _ = _best_by_enumeration(model, images[b : b + 1], 3)
        row = found[b].tolist()
        assert row[: len(best)] == best and all(x == model.cfg.text.pad_id for x in row[len(best) :])


@torch.no_grad()
def test_one_beam_is_greedy_decoding():
    model = _tiny_vocab_model()
    images = torch.randn(4, 3, 32, 32)
    greedy = model.generate(images, max_len=5)
    t = model.cfg.text
    prefix = torch.full((4, 1), t.cls_id)
    memory, memory_mask = model._prefix_memory(images, prefix, torch.ones_like(prefix))
    seq = torch.full((4, 1), t.bos_id)
    for _ in range(greedy.shape[1]):  # the argmax at every step, by hand
        seq = torch.cat([seq, model._next_logits(seq, memory, memory_mask).argmax(-1, keepdim=True)], 1)
    for b in range(4):
        row = greedy[b].tolist()
        end = row.index(t.sep_id) + 1 if t.sep_id in row else len(row)
        assert row[:end] == seq[b, 1 : end + 1].tolist()


@pytest.mark.parametrize(("before", "after", "patch"), [(32, 48, 8), (256, 384, 16)])
def test_weights_from_another_image_size_resample_the_position_embeddings(before, after, patch):
    seed_everything(0)
    small_model = COPA(tiny_task("retrieval", img_size=before, patch_size=patch))
    large = COPA(tiny_task("retrieval", img_size=after, patch_size=patch))
    state = small_model.state_dict()
    load_weights(large, state, "the 32 px model")
    grid = after // patch
    expected = resample_abs_pos_embed(state["vision.vit.pos_embed"], (grid, grid), num_prefix_tokens=1)
    torch.testing.assert_close(large.state_dict()["vision.vit.pos_embed"], expected)
    assert large.vision.vit.pos_embed.shape[1] == 1 + grid * grid
    for key, value in large.state_dict().items():
        if key != "vision.vit.pos_embed":
            assert torch.equal(value, state[key]), key
    other = COPA(dataclasses.replace(tiny_task("retrieval", img_size=before, patch_size=patch), embed_dim=48))
    with pytest.raises(ValueError, match=r"the 32 px model: .*itc_vision_proj"):
        load_weights(other, state, "the 32 px model")


@torch.no_grad()
def test_itm_reranking_scores_each_top_pair_as_itm_score_does_one_by_one():
    seed_everything(0)
    model = COPA(tiny_task("retrieval")).eval()
    captions = ["a red ball", "a blue kite", "two green cars", "a red kite", "one blue ball", "green grass"]
    tokenizer = CaptionTokenizer(build_wordpiece(captions * 3, vocab_size=60, min_frequency=1), max_len=8)
    g = torch.Generator().manual_seed(1)
    data = EvalSet(
        keys=["a", "b", "c"], images=torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8, generator=g),
        jpegs=[b""] * 3, captions=captions, caption_image=[0, 0, 1, 1, 2, 2], words=[[]] * 6,
        coverage=np.zeros((6, 4, 4), np.uint8), labelled=np.zeros(6, bool), box_labels=[[]] * 3,
        boxes=np.full((6, 4), np.nan),
    )  # fmt: skip
    sim_CI = np.random.default_rng(0).uniform(-1, 1, (6, 3))
    out, pairs, encoded = rerank_with_itm(model, data, tokenizer, sim_CI, k=1, batch_size=4, device="cpu")
    # k = 1: each caption's best image and each image's best caption
    top = {(c, int(sim_CI[c].argmax())) for c in range(6)} | {(int(sim_CI[:, i].argmax()), i) for i in range(3)}
    assert pairs == len(top) and encoded <= pairs
    for c in range(6):
        for i in range(3):
            if (c, i) in top:
                tokens = tokenizer([captions[c]])
                prob = model.itm_score(data.pixels([i]), tokens["input_ids"], tokens["attention_mask"]).item()
                assert out[c, i] == pytest.approx(3.0 + prob + sim_CI[c, i], abs=1e-5)
            else:
                assert out[c, i] == sim_CI[c, i]
