"""Caption tokenizer for COPA (DESIGN section 8): a local pretrained tokenizer, or a WordPiece vocabulary built from
the shards' own captions with the ``tokenizers`` library.

- ``build_wordpiece(captions, vocab_size)`` trains a BERT-style uncased WordPiece vocabulary with the special tokens
  first, in the order the small presets expect (``model.presets.WORDPIECE_SPECIALS``): [PAD]=0, [UNK]=1, [CLS]=2,
  [SEP]=3, [MASK]=4.
- ``CaptionTokenizer.from_dir(path)`` loads a tokenizer saved by ``save`` (a ``tokenizer.json``) or a local
  pretrained BERT tokenizer directory (``vocab.txt``); nothing is downloaded.
- ``CaptionTokenizer(captions)`` returns ``{"input_ids", "attention_mask"}`` long tensors ``[B, T]``: [CLS] ...
  [SEP], cut at ``max_len``, padded with [PAD]; the ``Tokenize`` callable ``model.loader`` takes.

Shape legend: B captions, T tokens (the longest caption in the batch, at most ``max_len``).
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, as model.presets.WORDPIECE_SPECIALS
TOKENIZER_FILE = "tokenizer.json"


def _bert_input(tokenizer: Tokenizer) -> Tokenizer:
    """BERT's uncased normalization and punctuation-aware word splitting (needed before training)."""
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


def _bert_output(tokenizer: Tokenizer) -> Tokenizer:
    """[CLS] ... [SEP] around every caption, and WordPiece decoding (needs the trained vocabulary's ids)."""
    tokenizer.decoder = decoders.WordPiece()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tokenizer


# Always in the vocabulary, whatever the captions hold: a fine-tuned decoder can then spell any answer ("2", "yes")
# even where the pretraining captions never wrote a digit.
ALPHABET = string.ascii_lowercase + string.digits + string.punctuation


def build_wordpiece(captions: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> Tokenizer:
    """Train an uncased WordPiece vocabulary on ``captions`` with ``SPECIAL_TOKENS`` as ids 0..4; the same captions
    give the same vocabulary in every process.

    The library's trainer numbers the "##c" pieces in hash order, which changes from process to process, and breaks
    ties between equally frequent merges by those numbers, so the vocabulary itself changed from run to run
    (huggingface/tokenizers#1794). Here every "##c" the words can hold is numbered up front in sorted order (passed
    as extra special tokens), then the vocabulary is reloaded as a plain WordPiece model, where they are ordinary
    pieces."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    captions = list(captions)  # read twice; the trainer reads at most ``tokenizer_captions`` of them
    tokenizer = _bert_input(Tokenizer(models.WordPiece(unk_token="[UNK]")))
    seen = set().union(*(tokenizer.normalizer.normalize_str(c) for c in set("".join(captions))))  # char by char
    pieces = sorted(  # the characters that can continue a word (not spaces, punctuation or CJK); "12" is "1", "##2"
        f"##{c}"
        for c in seen.union(string.ascii_lowercase + string.digits)
        if len(tokenizer.pre_tokenizer.pre_tokenize_str(f"a{c}")) == 1
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *pieces],
        initial_alphabet=list(ALPHABET),
        show_progress=False,
    )
    tokenizer.train_from_iterator(captions, trainer=trainer)
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    tokenizer = _bert_input(Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")))
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return _bert_output(tokenizer)


class CaptionTokenizer:
    """Captions -> padded id tensors; see the module docstring."""

    def __init__(self, tokenizer: Tokenizer, max_len: int = 40):
        if max_len < 2:
            raise ValueError(f"max_len must leave room for [CLS] and [SEP], got {max_len}")
        self.tokenizer, self.max_len = tokenizer, max_len
        self.pad_id = tokenizer.token_to_id("[PAD]")
        if self.pad_id is None:
            raise ValueError("the tokenizer has no [PAD] token")
        tokenizer.enable_truncation(max_length=max_len)
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def special_ids(self) -> dict[str, int]:
        """Ids for ``TextConfig`` (pad_id, cls_id, sep_id, mask_id, bos_id)."""
        ids = {name: self.tokenizer.token_to_id(tok) for name, tok in
               (("pad_id", "[PAD]"), ("cls_id", "[CLS]"), ("sep_id", "[SEP]"), ("mask_id", "[MASK]"))}  # fmt: skip
        return ids | {"bos_id": ids["cls_id"]}

    def __call__(self, captions: list[str]) -> dict[str, torch.Tensor]:
        encodings = self.tokenizer.encode_batch(list(captions))
        return {
            "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
        }

    def prompt(self, text: str) -> torch.Tensor:
        """A captioning prompt as the decoder's prefix, [1, P]: [CLS] and the prompt's words, no [SEP] ("" gives
        [CLS] alone)."""
        ids = self.tokenizer.encode(text).ids
        return torch.tensor([ids[:-1]], dtype=torch.long)  # the encoding ends with [SEP]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def save(self, folder: str) -> str:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, TOKENIZER_FILE)
        self.tokenizer.save(path)
        return path

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_str(cls, text: str, max_len: int = 40) -> CaptionTokenizer:
        """A tokenizer serialized by ``to_str`` (as checkpoints carry it)."""
        return cls(Tokenizer.from_str(text), max_len)

    @classmethod
    def from_dir(cls, folder: str, max_len: int = 40) -> CaptionTokenizer:
        """A ``tokenizer.json`` saved by ``save``, or a BERT ``vocab.txt`` (a local pretrained tokenizer)."""
        json_path, vocab_path = os.path.join(folder, TOKENIZER_FILE), os.path.join(folder, "vocab.txt")
        if os.path.exists(json_path):
            return cls(Tokenizer.from_file(json_path), max_len)
        if os.path.exists(vocab_path):
            wordpiece = models.WordPiece.from_file(vocab_path, unk_token="[UNK]")
            return cls(_bert_output(_bert_input(Tokenizer(wordpiece))), max_len)
        raise FileNotFoundError(f"{folder}: no {TOKENIZER_FILE} or vocab.txt (a tokenizer directory)")
