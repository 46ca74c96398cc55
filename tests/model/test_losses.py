"""The five objectives as pure functions: PTA on labelled samples only, BERT masking, prefix split, negatives."""

import math

import pytest
import torch
import torch.nn.functional as F

from model.losses import (
    IGNORE,
    itc_loss,
    mask_tokens,
    pta_loss,
    pta_targets,
    sample_hard_negatives,
    split_prefix,
)
from model.presets import tiny
from model.utils import seed_everything

TEXT = tiny().text  # [PAD]=0, [CLS]=2, [SEP]=3, [MASK]=4


def test_pta_is_an_exact_zero_in_the_graph_without_labels():
    logits_BN = torch.randn(4, 16, requires_grad=True)
    coverage = torch.randint(0, 256, (4, 4, 4), dtype=torch.uint8)
    loss = pta_loss([logits_BN], [torch.arange(16).expand(4, 16)], coverage, torch.zeros(4, dtype=torch.bool))
    assert loss.item() == 0.0 and not math.isnan(loss.item())
    loss.backward()
    assert torch.all(logits_BN.grad == 0)


def test_pta_of_a_mixed_batch_uses_only_the_labelled_samples():
    seed_everything(0)
    logits_BN = torch.randn(4, 16)
    coverage = torch.randint(0, 256, (4, 4, 4), dtype=torch.uint8)
    has_labels = torch.tensor([True, False, True, False])
    idx = torch.arange(16).expand(4, 16)
    loss = pta_loss([logits_BN], [idx], coverage, has_labels, tau=0.5)
    labels = (coverage[has_labels].flatten(1).float() / 255 > 0.5).float()
    expected = F.binary_cross_entropy_with_logits(logits_BN[has_labels], labels)
    torch.testing.assert_close(loss, expected)
    # Whatever sits in the unlabelled rows does not matter.
    other = coverage.clone()
    other[~has_labels] = 255
    torch.testing.assert_close(pta_loss([logits_BN], [idx], other, has_labels, tau=0.5), loss)


def test_pta_at_a_second_layer_gathers_labels_through_the_kept_indices():
    coverage = torch.zeros(1, 4, 4, dtype=torch.uint8)
    coverage[0, 0, :2] = 200  # patches 0 and 1 positive
    kept_BK = torch.tensor([[1, 5, 9]])  # the second detector scores only these three patches
    logits = [torch.zeros(1, 16), torch.tensor([[10.0, -10.0, -10.0]])]  # perfect on patch 1, 5, 9
    loss = pta_loss(logits, [torch.arange(16)[None], kept_BK], coverage, torch.ones(1, dtype=torch.bool))
    first = F.binary_cross_entropy_with_logits(torch.zeros(16), pta_targets(coverage, 0.0, False)[0])
    torch.testing.assert_close(
        loss, (first + F.binary_cross_entropy_with_logits(logits[1][0], torch.tensor([1.0, 0, 0]))) / 2
    )


def test_pta_targets_hard_and_soft_and_the_grid_check():
    coverage = torch.tensor([[[0, 1], [128, 255]]], dtype=torch.uint8)
    assert pta_targets(coverage, 0.0, False).tolist() == [[0.0, 1.0, 1.0, 1.0]]
    assert pta_targets(coverage, 0.5, False).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    torch.testing.assert_close(pta_targets(coverage, 0.0, True), coverage.flatten(1).float() / 255)
    with pytest.raises(ValueError, match="coverage"):
        pta_loss([torch.zeros(1, 9)], [torch.arange(9)[None]], coverage, torch.ones(1, dtype=torch.bool))


def test_mask_tokens_targets_only_words_about_fifteen_percent_and_at_least_one_per_caption():
    seed_everything(0)
    B, T = 400, 12
    ids = torch.randint(10, TEXT.vocab_size, (B, T))
    ids[:, 0], ids[:, 9], ids[:, 10:] = TEXT.cls_id, TEXT.sep_id, TEXT.pad_id
    mask = (ids != TEXT.pad_id).long()
    masked, labels = mask_tokens(ids, mask, TEXT, 0.15)
    chosen = labels != IGNORE
    assert not chosen[:, [0, 9, 10, 11]].any(), "special tokens and padding are never targets"
    assert chosen.any(dim=1).all(), "every caption has a target"
    assert torch.equal(labels[chosen], ids[chosen])
    assert 0.13 < chosen[:, 1:9].float().mean() < 0.22
    share_masked = (masked[chosen] == TEXT.mask_id).float().mean()
    share_kept = (masked[chosen] == ids[chosen]).float().mean()
    assert 0.72 < share_masked < 0.88 and 0.05 < share_kept < 0.16
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_split_prefix_cuts_at_a_word_and_teacher_forces_the_rest():
    seed_everything(0)
    ids = torch.tensor([[2, 11, 12, 13, 3, 0], [2, 21, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    for _ in range(20):
        s = split_prefix(ids, mask, TEXT)
        for b in range(2):
            prefix = s.prefix_ids[b][s.prefix_mask[b].bool()].tolist()
            target = s.targets[b][s.targets[b] != IGNORE].tolist()
            words = ids[b][mask[b].bool()].tolist()
            assert prefix[0] == TEXT.cls_id and len(target) >= 2, "at least one word and [SEP] to predict"
            assert prefix + target == words, "prefix and continuation rebuild the caption"
            dec = s.decoder_ids[b][s.decoder_mask[b].bool()].tolist()
            assert dec == [TEXT.bos_id, *target[:-1]]
            assert target[-1] == TEXT.sep_id


def test_hard_negatives_never_pick_the_positive():
    seed_everything(0)
    sim = torch.randn(6, 6) * 10
    for _ in range(50):
        neg_text, neg_image = sample_hard_negatives(sim, sim.t())
        assert torch.all(neg_text != torch.arange(6)) and torch.all(neg_image != torch.arange(6))
    with pytest.raises(ValueError, match="at least 2"):
        sample_hard_negatives(torch.zeros(1, 1), torch.zeros(1, 1))


def test_hard_negatives_over_every_ranks_candidates_skip_the_positive_at_its_offset():
    seed_everything(0)
    sim_i2t, sim_t2i = torch.zeros(4, 12), torch.zeros(4, 12)  # rank 1 of 3, 4 pairs each: positives at 4..7
    drawn_text, drawn_image = set(), set()
    for _ in range(200):
        neg_text, neg_image = sample_hard_negatives(sim_i2t, sim_t2i, offset=4)
        assert torch.all(neg_text != 4 + torch.arange(4)) and torch.all(neg_image != 4 + torch.arange(4))
        drawn_text |= set(neg_text.tolist())
        drawn_image |= set(neg_image.tolist())
    assert drawn_text == drawn_image == set(range(12))  # every rank's pairs, each a negative of some row
    sim_i2t[:, 10] = 50.0  # one much closer candidate on another rank is drawn almost always
    assert (sample_hard_negatives(sim_i2t, sim_t2i, offset=4)[0] == 10).all()


def test_itc_over_gathered_candidates_averages_to_the_whole_batch_loss():
    """Two ranks' losses (their own rows against all 2B candidates) average to the one-process loss over 2B pairs:
    the identity DDP's gradient average relies on."""
    seed_everything(0)
    img, txt = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    temp = torch.tensor(0.1)
    per_rank = [itc_loss(img[r * 4 : r * 4 + 4], txt[r * 4 : r * 4 + 4], temp, img, txt, offset=r * 4) for r in (0, 1)]
    torch.testing.assert_close((per_rank[0] + per_rank[1]) / 2, itc_loss(img, txt, temp))
    sim = img @ txt.t() / temp  # by hand: the mean of the row and column log-softmax at the diagonal
    by_hand = -(sim.log_softmax(1).diagonal().mean() + sim.log_softmax(0).diagonal().mean()) / 2
    torch.testing.assert_close(itc_loss(img, txt, temp), by_hand)
    local = [itc_loss(img[r * 4 : r * 4 + 4], txt[r * 4 : r * 4 + 4], temp) for r in (0, 1)]
    assert abs((local[0] + local[1]) / 2 - itc_loss(img, txt, temp)) > 0.1  # per-rank ITC is another loss


def test_itc_is_low_for_aligned_and_high_for_shuffled_embeddings():
    seed_everything(0)
    feats = F.normalize(torch.randn(8, 16), dim=-1)
    temp = torch.tensor(0.05)
    assert itc_loss(feats, feats, temp) < 0.1
    assert itc_loss(feats, feats.roll(1, dims=0), temp) > 5.0
