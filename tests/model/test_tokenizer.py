"""model.tokenizer: a WordPiece vocabulary built from captions, saved and reloaded; a local BERT vocab.txt."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from model.presets import WORDPIECE_SPECIALS
from model.tokenizer import SPECIAL_TOKENS, CaptionTokenizer, build_wordpiece

CAPTIONS = [
    "a red ball on the left",
    "two red balls next to a bike",
    "a man riding a bike on the road",
    "a woman holding a kite",
    "three kites in the sky",
] * 20


def test_built_vocabulary_has_the_preset_special_ids_and_pads_a_batch() -> None:
    tok = CaptionTokenizer(build_wordpiece(CAPTIONS, vocab_size=200, min_frequency=1), max_len=8)
    ids = tok.special_ids()
    assert {k: ids[k] for k in WORDPIECE_SPECIALS} == WORDPIECE_SPECIALS
    batch = tok(["a red ball", "a man riding a bike on the road today"])
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (2, 8)  # the longer one is cut
    first = batch["input_ids"][0].tolist()
    sep = first.index(ids["sep_id"])
    assert first[0] == ids["cls_id"] and first[sep + 1 :] == [ids["pad_id"]] * (len(first) - sep - 1)
    assert batch["attention_mask"][0].tolist() == [1 if t != ids["pad_id"] else 0 for t in first]
    assert batch["input_ids"][1, -1].item() == ids["sep_id"]
    assert tok.decode(first) == "a red ball"
    assert ids["mask_id"] == SPECIAL_TOKENS.index("[MASK]")


def test_the_same_captions_give_the_same_vocabulary_every_time() -> None:
    """Equally frequent merges are common in short captions; the library alone broke their ties by hash order, and
    five builds of these captions gave five different vocabularies."""
    rng = random.Random(0)
    words = sorted({word for caption in CAPTIONS for word in caption.split()})
    captions = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(2000)]
    assert len({build_wordpiece(captions, vocab_size=300).to_str() for _ in range(5)}) == 1


def test_digits_and_letters_continue_a_word_even_if_no_caption_did() -> None:
    tok = CaptionTokenizer(build_wordpiece(CAPTIONS, vocab_size=200, min_frequency=1))
    ids = tok(["12 zebras"])["input_ids"][0].tolist()
    assert tok.tokenizer.token_to_id("[UNK]") not in ids
    assert tok.decode(ids) == "12 zebras"


def test_save_and_reload_give_the_same_ids(tmp_path: Path) -> None:
    tok = CaptionTokenizer(build_wordpiece(CAPTIONS, vocab_size=200, min_frequency=1))
    tok.save(str(tmp_path / "run"))
    again = CaptionTokenizer.from_dir(str(tmp_path / "run"))
    assert torch.equal(tok(CAPTIONS[:5])["input_ids"], again(CAPTIONS[:5])["input_ids"])
    assert again.vocab_size == tok.vocab_size


def test_a_local_bert_vocab_txt_loads(tmp_path: Path) -> None:
    vocab = [*SPECIAL_TOKENS, "a", "red", "ball", "##s", "on"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = CaptionTokenizer.from_dir(str(tmp_path))
    assert tok(["A red BALLS zebra"])["input_ids"][0].tolist() == [2, 5, 6, 7, 8, 1, 3]


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer directory"):
        CaptionTokenizer.from_dir(str(tmp_path))
    with pytest.raises(ValueError, match="vocab_size"):
        build_wordpiece(CAPTIONS, vocab_size=3)
