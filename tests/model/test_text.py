"""Text towers from transformers BERT blocks: masks, and initialization from a local BERT directory."""

import dataclasses

import pytest
import torch
from transformers import BertConfig, BertModel

from model.copa import COPA
from model.presets import tiny
from model.text import FusionEncoder, TextDecoder
from model.utils import seed_everything


def test_fusion_is_bidirectional_and_the_decoder_causal():
    seed_everything(0)
    cfg = tiny().text
    fusion, decoder = FusionEncoder(cfg, vision_width=48).eval(), TextDecoder(cfg).eval()
    h_BTD, mask_BT = torch.randn(2, 6, cfg.hidden), torch.ones(2, 6, dtype=torch.long)
    visual_BMD, memory_BMD = torch.randn(2, 5, 48), torch.randn(2, 5, cfg.hidden)
    changed_BTD = h_BTD.clone()
    changed_BTD[:, -1] += 1.0  # change the last token only
    with torch.no_grad():
        fused, fused_changed = fusion(h_BTD, mask_BT, visual_BMD), fusion(changed_BTD, mask_BT, visual_BMD)
        dec = decoder(h_BTD, mask_BT, memory_BMD, torch.ones(2, 5))
        dec_changed = decoder(changed_BTD, mask_BT, memory_BMD, torch.ones(2, 5))
    assert not torch.allclose(fused[:, 0], fused_changed[:, 0]), "fusion: the first token sees the last"
    torch.testing.assert_close(dec[:, :-1], dec_changed[:, :-1])  # decoder: earlier tokens do not see later ones
    # Padding is masked: what sits on a padded position does not matter.
    pad_mask = torch.tensor([[1, 1, 1, 1, 1, 0]] * 2)
    with torch.no_grad():
        a, b = fusion(h_BTD, pad_mask, visual_BMD), fusion(changed_BTD, pad_mask, visual_BMD)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])


def make_bert_dir(tmp_path, num_layers=3, **overrides):
    text = tiny().text
    sizes = {
        "vocab_size": text.vocab_size,
        "hidden_size": text.hidden,
        "num_hidden_layers": num_layers,
        "num_attention_heads": text.heads,
        "intermediate_size": text.intermediate,
        "max_position_embeddings": text.max_position_embeddings,
    }
    config = BertConfig(**{**sizes, **overrides})
    seed_everything(123)
    bert = BertModel(config)
    bert.save_pretrained(tmp_path / "bert")
    return bert, str(tmp_path / "bert")


def test_loading_a_bert_directory_fills_text_fusion_and_decoder(tmp_path):
    bert, bert_dir = make_bert_dir(tmp_path)
    cfg = tiny()
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, bert_dir=bert_dir, decoder_layers=2))
    seed_everything(0)
    model = COPA(cfg)
    layers = bert.encoder.layer

    def same(a, b):
        return torch.equal(a.detach(), b.detach())

    emb = model.text_encoder.embeddings
    assert same(emb.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    assert same(emb.position_embeddings.weight, bert.embeddings.position_embeddings.weight)
    assert same(emb.LayerNorm.weight, bert.embeddings.LayerNorm.weight)
    text_layer, fusion_layer = model.text_encoder.layers[0], model.fusion.layers[0]
    assert same(text_layer.attention.self.query.weight, layers[0].attention.self.query.weight)
    assert same(text_layer.output.dense.weight, layers[0].output.dense.weight)
    # text_layers = 1, so the fusion layer is BERT's layer 1; its cross-attention has no BERT counterpart
    assert same(fusion_layer.attention.self.key.weight, layers[1].attention.self.key.weight)
    assert same(fusion_layer.intermediate.dense.weight, layers[1].intermediate.dense.weight)
    assert not same(fusion_layer.crossattention.self.key.weight, layers[1].attention.self.key.weight)
    for i, layer in enumerate(model.decoder.layers):
        assert same(layer.attention.self.value.weight, layers[i].attention.self.value.weight)
    # The MLM and LM heads decode with the (loaded) word embeddings.
    assert model._embedding() is emb.word_embeddings.weight


def test_a_bert_of_another_shape_is_refused_with_the_field_named(tmp_path):
    _, bert_dir = make_bert_dir(tmp_path, intermediate_size=96)
    cfg = tiny()
    with pytest.raises(ValueError, match=r"TextConfig\.intermediate"):
        COPA(dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, bert_dir=bert_dir)))
    _, shallow_dir = make_bert_dir(tmp_path / "shallow", num_layers=1)
    with pytest.raises(ValueError, match="text_layers"):
        COPA(dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, bert_dir=shallow_dir)))
    with pytest.raises(FileNotFoundError, match=r"TextConfig\.bert_dir"):
        COPA(dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, bert_dir=str(tmp_path / "none"))))
