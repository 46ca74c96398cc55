"""Vision weights in the layouts users hold, each against its source library on the same pixels: a transformers
CLIP directory (``CLIPVisionModel`` and ``CLIPModel``, safetensors and .bin), the OpenCLIP / converted-OpenAI
``visual.*`` state dict (built here from the same transformers weights by the published key correspondence, so
transformers is the oracle and open_clip is not a test dependency); refusals of TorchScript archives and of
checkpoints of another architecture."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

from model.config import VisionConfig
from model.utils import seed_everything
from model.vision import VisionTPD

WIDTH, DEPTH, HEADS, PATCH, SIZE = 64, 2, 2, 8, 32


def tower_cfg(act: str = "quick_gelu", **overrides) -> VisionConfig:
    name = "vit_base_patch16_clip_quickgelu_224" if act == "quick_gelu" else "vit_base_patch16_clip_224"
    cfg = VisionConfig(
        model_name=name, img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
        detect_layers=(1,), keep_ratios=(1.0,), tpd_width=32,
    )  # fmt: skip
    return dataclasses.replace(cfg, **overrides)


def hf_vision_config(act: str = "quick_gelu", width: int = WIDTH) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=4 * width, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
        image_size=SIZE, patch_size=PATCH, hidden_act=act, layer_norm_eps=1e-5,
    )  # fmt: skip


def random_hf(act: str) -> CLIPVisionModel:
    seed_everything(0)
    model = CLIPVisionModel(hf_vision_config(act)).eval()
    with torch.no_grad():  # transformers initialises norms to 1/0 and biases to 0: make every tensor matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def hf_tokens(model: CLIPVisionModel, pixels: torch.Tensor) -> torch.Tensor:
    """[CLS] and patch features as timm computes them: the final LayerNorm on every token."""
    with torch.no_grad():
        tower = getattr(model, "vision_model", model)  # transformers 5 holds the modules directly
        return tower.post_layernorm(model(pixel_values=pixels).last_hidden_state)


def our_tokens(cfg: VisionConfig, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return VisionTPD(cfg).eval()(pixels).tokens


@pytest.fixture
def pixels() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_a_transformers_clip_vision_directory_gives_its_features(tmp_path, pixels, act, safe):
    source = random_hf(act)
    source.save_pretrained(tmp_path / "clip", safe_serialization=safe)
    ours = our_tokens(tower_cfg(act, checkpoint=str(tmp_path / "clip")), pixels)
    torch.testing.assert_close(ours, hf_tokens(source, pixels), rtol=0, atol=1e-5)


def test_a_whole_clip_model_directory_gives_its_vision_tower(tmp_path, pixels):
    seed_everything(0)
    config = CLIPConfig(
        vision_config=hf_vision_config().to_dict(),
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(tmp_path / "clip")
    vision = CLIPVisionModel(hf_vision_config()).eval()
    prefix = "vision_model."  # a CLIPModel's tensors, as CLIPVisionModel of transformers 4 also named them
    assert any(k.startswith(prefix) for k in model.state_dict())
    vision.load_state_dict({k.removeprefix(prefix): v for k, v in model.state_dict().items() if k.startswith(prefix)})
    ours = our_tokens(tower_cfg(checkpoint=str(tmp_path / "clip")), pixels)
    torch.testing.assert_close(ours, hf_tokens(vision, pixels), rtol=0, atol=1e-5)


def open_clip_layout(model: CLIPVisionModel) -> dict[str, torch.Tensor]:
    """The OpenCLIP (and OpenAI) ``visual.*`` names of the same weights: fused in_proj, conv1, ln_pre/ln_post."""
    s = {k.removeprefix("vision_model."): v for k, v in model.state_dict().items()}
    out = {
        "visual.conv1.weight": s["embeddings.patch_embedding.weight"],
        "visual.class_embedding": s["embeddings.class_embedding"],
        "visual.positional_embedding": s["embeddings.position_embedding.weight"],
        "visual.proj": torch.randn(WIDTH, 16),  # the image projection: not part of the tower
    }
    for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out |= {f"visual.{ours}.{p}": s[f"{theirs}.{p}"] for p in ("weight", "bias")}
    for i in range(DEPTH):
        a, b = f"encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        out[f"{b}attn.in_proj_weight"] = torch.cat([s[f"{a}self_attn.{x}_proj.weight"] for x in "qkv"])
        out[f"{b}attn.in_proj_bias"] = torch.cat([s[f"{a}self_attn.{x}_proj.bias"] for x in "qkv"])
        pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2"}
        pairs |= {"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
        for ours, theirs in pairs.items():
            out |= {f"{b}{ours}.{p}": s[f"{a}{theirs}.{p}"] for p in ("weight", "bias")}
    return {k: v.clone().contiguous() for k, v in out.items()}


def test_an_open_clip_state_dict_gives_the_same_features(tmp_path, pixels):
    source = random_hf("quick_gelu")
    torch.save(open_clip_layout(source), tmp_path / "open_clip_pytorch_model.bin")
    ours = our_tokens(tower_cfg(checkpoint=str(tmp_path / "open_clip_pytorch_model.bin")), pixels)
    torch.testing.assert_close(ours, hf_tokens(source, pixels), rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_a_torchscript_archive_is_refused_with_a_conversion_recipe(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "ViT-B-16.pt"))
    with pytest.raises(ValueError, match=r"TorchScript archive.*torch\.jit\.load.*quickgelu"):
        VisionTPD(tower_cfg(checkpoint=str(tmp_path / "ViT-B-16.pt")))


def test_checkpoints_of_another_architecture_are_refused_naming_what_differs(tmp_path):
    wider = CLIPVisionModel(hf_vision_config(width=2 * WIDTH))
    wider.save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match=r"hidden_size 128 \(the tower: 64\)"):
        VisionTPD(tower_cfg(checkpoint=str(tmp_path / "wide")))
    random_hf("quick_gelu").save_pretrained(tmp_path / "quick")
    with pytest.raises(ValueError, match=r"hidden_act 'quick_gelu' \(the tower: 'gelu'\).*quickgelu_224"):
        VisionTPD(tower_cfg("gelu", checkpoint=str(tmp_path / "quick")))
    # a wider ViT's state dict (what a ViT-L is to a ViT-B): the first mismatched shapes are named
    torch.save(open_clip_layout(wider) | {"visual.proj": torch.zeros(2 * WIDTH, 16)}, tmp_path / "wide.bin")
    with pytest.raises(
        ValueError, match=r"shapes \['patch_embed\.proj\.weight \[128, 3, 8, 8\] \(the tower: \[64, 3, 8, 8\]\)"
    ):
        VisionTPD(tower_cfg(checkpoint=str(tmp_path / "wide.bin")))
    # a text model given as vision weights
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(10, WIDTH)}, tmp_path / "text.bin")
    with pytest.raises(ValueError, match=r"missing \['blocks\.0\.attn\.proj\.bias'.*unexpected \['embeddings"):
        VisionTPD(tower_cfg(checkpoint=str(tmp_path / "text.bin")))


def test_a_timm_state_dict_gives_the_features_of_its_timm_model(tmp_path, pixels):
    seed_everything(0)
    cfg = tower_cfg()
    source = timm.create_model(cfg.model_name, pretrained=False, img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH,
                               depth=DEPTH, num_heads=HEADS, num_classes=0).eval()  # fmt: skip
    torch.save(source.state_dict(), tmp_path / "timm.pth")
    with torch.no_grad():
        expected = source.forward_features(pixels)
    torch.testing.assert_close(our_tokens(dataclasses.replace(cfg, checkpoint=str(tmp_path / "timm.pth")), pixels),
                               expected, rtol=0, atol=1e-5)  # fmt: skip


def test_a_clip_directory_of_another_resolution_is_resampled_to_the_tower(tmp_path):
    source = random_hf("quick_gelu")  # trained at 32 px: a 4 x 4 grid
    source.save_pretrained(tmp_path / "clip")
    tower = VisionTPD(tower_cfg(img_size=48, checkpoint=str(tmp_path / "clip")))  # a 6 x 6 grid
    table = getattr(source, "vision_model", source).embeddings.position_embedding.weight.detach()[None]
    expected = resample_abs_pos_embed(table, new_size=(6, 6), num_prefix_tokens=1)
    torch.testing.assert_close(tower.vit.pos_embed.detach(), expected)
