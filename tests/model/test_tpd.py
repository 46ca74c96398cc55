"""The Text-aware Patch Detector (DESIGN section 7): top-K in original order, one fused token, exact identity."""

import pytest
import torch

from model.config import keep_count
from model.tpd import TextAwarePatchDetector, select_patches
from model.utils import seed_everything


@pytest.mark.parametrize("keep", [1, 3, 7, 15])
def test_select_patches_keeps_top_k_in_order_and_fuses_the_rest(keep):
    seed_everything(0)
    B, N, D = 3, 16, 8
    x_BND, logits_BN = torch.randn(B, N, D), torch.randn(B, N)
    out, kept_idx_BK, weights_BN = select_patches(x_BND, logits_BN, keep)

    assert out.shape == (B, keep + 1, D)
    assert kept_idx_BK.shape == (B, keep)
    for b in range(B):
        idx = kept_idx_BK[b].tolist()
        assert idx == sorted(set(idx)), "kept indices are sorted and unique"
        assert set(idx) == set(logits_BN[b].topk(keep).indices.tolist()), "the K highest scores are kept"
        torch.testing.assert_close(out[b, :keep], x_BND[b, idx])
    kept_mask_BN = torch.zeros(B, N, dtype=torch.bool).scatter_(1, kept_idx_BK, True)
    assert torch.all(weights_BN[kept_mask_BN] == 0)
    torch.testing.assert_close(weights_BN.sum(dim=1), torch.ones(B))
    # The fused token is the softmax-weighted mean of the dropped patches, normalized over the dropped ones only.
    dropped_logits = logits_BN.masked_fill(kept_mask_BN, float("-inf"))
    torch.testing.assert_close(out[:, -1], torch.einsum("bn,bnd->bd", dropped_logits.softmax(1), x_BND))


def test_select_patches_keep_all_is_the_identity():
    x_BND, logits_BN = torch.randn(2, 9, 4), torch.randn(2, 9)
    out, kept_idx, weights = select_patches(x_BND, logits_BN, 9)
    assert out is x_BND
    assert kept_idx.tolist() == [list(range(9))] * 2
    assert torch.all(weights == 0)


def test_select_patches_rejects_bad_input():
    with pytest.raises(ValueError, match="keep"):
        select_patches(torch.randn(1, 4, 2), torch.randn(1, 4), 0)
    with pytest.raises(ValueError, match="logits_BN"):
        select_patches(torch.randn(1, 4, 2), torch.randn(1, 5), 2)


def test_detector_outputs_k_plus_two_tokens_with_cls_first():
    seed_everything(0)
    det = TextAwarePatchDetector(dim=8, query_dim=8, width=4, keep_ratio=0.3)
    x_BND, q_BD = torch.randn(2, 1 + 20, 8), torch.randn(2, 8)
    d = det(x_BND, q_BD)
    K = keep_count(0.3, 20)
    assert K == 6
    assert d.tokens.shape == (2, K + 2, 8)
    assert d.kept_idx.shape == (2, K) and d.logits.shape == (2, 20) and d.fuse_weights.shape == (2, 20)
    torch.testing.assert_close(d.tokens[:, 0], x_BND[:, 0])
    torch.testing.assert_close(d.fuse_weights.sum(1), torch.ones(2))


def test_detector_keep_ratio_one_returns_the_input_tensor():
    det = TextAwarePatchDetector(dim=8, query_dim=8, width=4, keep_ratio=1.0)
    x_BND = torch.randn(2, 17, 8)
    d = det(x_BND, torch.randn(2, 8))
    assert d.tokens is x_BND
    assert d.kept_idx.tolist() == [list(range(16))] * 2


def test_the_query_changes_the_selection():
    seed_everything(1)
    det = TextAwarePatchDetector(dim=8, query_dim=8, width=8, keep_ratio=0.25)
    x_BND = torch.randn(1, 1 + 32, 8).expand(2, -1, -1)
    d = det(x_BND, torch.randn(2, 8))
    assert not torch.equal(d.kept_idx[0], d.kept_idx[1])


def test_gradient_reaches_the_detector_through_the_fused_token_only():
    seed_everything(0)
    det = TextAwarePatchDetector(dim=8, query_dim=8, width=4, keep_ratio=0.5)
    x_BND = torch.randn(2, 17, 8)
    d = det(x_BND, torch.randn(2, 8))
    d.tokens[:, 1:-1].sum().backward(retain_graph=True)  # kept tokens: top-K carries no gradient to the scores
    assert det.proj_patch.weight.grad is None or torch.all(det.proj_patch.weight.grad == 0)
    (d.tokens[:, -1] ** 2).sum().backward()  # the fused token's softmax weights do
    assert det.proj_patch.weight.grad.abs().sum() > 0
    assert det.proj_query.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("ratio", "n", "k"), [(0.7, 10, 7), (0.5, 256, 128), (0.3, 256, 77), (1.0, 576, 576)])
def test_keep_count_is_the_ceiling_without_float_noise(ratio, n, k):
    assert keep_count(ratio, n) == k
