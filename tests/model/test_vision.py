"""ViT-TPD on timm (DESIGN section 7): identity at keep ratio 1.0, shapes, several detect layers, checkpoints."""

import dataclasses

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from model.config import VisionConfig
from model.presets import tiny
from model.utils import seed_everything
from model.vision import VisionTPD, build_vit


def vision_cfg(**overrides) -> VisionConfig:
    return dataclasses.replace(tiny().vision, **overrides)


@pytest.mark.parametrize(
    "cfg",
    [
        vision_cfg(keep_ratios=(1.0,)),
        vision_cfg(detect_layers=(0, 3), keep_ratios=(1.0, 1.0)),
        # the CLIP-style block (pre-norm) of the base preset, at test size
        vision_cfg(
            model_name="vit_base_patch16_clip_224",
            img_size=32,
            patch_size=16,
            depth=2,
            keep_ratios=(1.0,),
            detect_layers=(1,),
        ),
    ],
    ids=["plain", "two-layers", "clip-arch"],
)
def test_keep_ratio_one_equals_plain_timm_bit_for_bit(cfg):
    seed_everything(0)
    tower = VisionTPD(cfg).eval()
    dims = dict(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        num_classes=0,
    )
    plain = timm.create_model(cfg.model_name, **dims) if cfg.model_name else VisionTransformer(**dims)
    plain.load_state_dict(tower.vit.state_dict())
    plain.eval()
    image = torch.randn(3, 3, cfg.img_size, cfg.img_size)
    with torch.inference_mode():
        expected = plain.forward_features(image)
        for query in (None, torch.randn(3, cfg.embed_dim)):
            out = tower(image, query)
            assert torch.equal(out.tokens, expected)
            assert [k.shape[1] for k in out.kept_idx] == [cfg.num_patches] * len(cfg.detect_layers)


def test_shared_plus_tail_is_the_full_forward_and_shapes_follow_keep_counts():
    seed_everything(0)
    cfg = vision_cfg(img_size=48, detect_layers=(1, 3), keep_ratios=(0.5, 0.5))
    tower = VisionTPD(cfg).eval()
    image, query = torch.randn(2, 3, 48, 48), torch.randn(2, cfg.embed_dim)
    N = cfg.num_patches
    k1, k2 = cfg.keep_counts()
    assert (N, k1, k2) == (36, 18, 9)
    with torch.no_grad():
        shared = tower.forward_shared(image)
        assert shared.shape == (2, N + 1, cfg.embed_dim)
        out = tower.forward_tail(shared, query)
        torch.testing.assert_close(out.tokens, tower(image, query).tokens)
    assert out.tokens.shape == (2, k2 + 2, cfg.embed_dim)
    assert [lg.shape[1] for lg in out.logits] == [N, k1]
    assert [k.shape[1] for k in out.kept_idx] == [k1, k2]
    for b in range(2):
        first, second = out.kept_idx[0][b].tolist(), out.kept_idx[1][b].tolist()
        assert first == sorted(set(first)) and second == sorted(set(second))
        assert set(second) <= set(first), "the second detector chooses among the first one's kept patches"
        assert out.scored_idx[1][b].tolist() == first


def test_unpruned_tail_ignores_the_detectors():
    seed_everything(0)
    cfg = vision_cfg()
    tower = VisionTPD(cfg).eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = tower(image, prune=False)
    assert out.tokens.shape == (2, cfg.num_patches + 1, cfg.embed_dim)
    assert out.logits == [] and out.kept_idx == []


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loading_a_timm_state_dict_gives_its_weights(tmp_path, suffix):
    seed_everything(0)
    cfg = vision_cfg()
    source = build_vit(cfg)
    state = {k: v.clone().contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"vit{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)

    tower = VisionTPD(dataclasses.replace(cfg, checkpoint=str(path)))
    loaded = tower.vit.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_loading_a_checkpoint_of_another_size_resamples_position_embeddings(tmp_path):
    seed_everything(0)
    source = build_vit(vision_cfg(img_size=32))  # 4 x 4 grid
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    tower = VisionTPD(vision_cfg(img_size=48, checkpoint=str(tmp_path / "vit.pth")))  # 6 x 6 grid
    expected = resample_abs_pos_embed(source.pos_embed.detach(), new_size=(6, 6), num_prefix_tokens=1)
    assert tower.vit.pos_embed.shape == (1, 37, 64)
    torch.testing.assert_close(tower.vit.pos_embed.detach(), expected)
    assert torch.equal(tower.vit.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_a_checkpoint_that_does_not_fit_names_the_setting(tmp_path):
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"VisionConfig\.checkpoint"):
        VisionTPD(vision_cfg(checkpoint=str(tmp_path / "bad.pth")))
    with pytest.raises(FileNotFoundError, match=r"VisionConfig\.checkpoint"):
        VisionTPD(vision_cfg(checkpoint=str(tmp_path / "missing.pth")))


def test_set_detection_moves_detectors_and_changes_keep_ratios():
    seed_everything(0)
    cfg = vision_cfg()
    tower = VisionTPD(cfg).eval()
    image = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tower.set_detection((1,), (0.25,))
        out = tower(image, torch.randn(2, cfg.embed_dim))
        assert out.tokens.shape[1] == 4 + 2 and tower.cfg.detect_layers == (1,)
        tower.set_detection((3,), (1.0,))
        assert torch.equal(tower(image).tokens, tower.vit.forward_features(image))
    with pytest.raises(ValueError, match="detect_layers"):
        tower.set_detection((1, 2), (0.5, 0.5))
    with pytest.raises(ValueError, match="keep_ratios"):
        tower.set_detection((1,), (0.0,))
