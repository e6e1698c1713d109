"""CLIP's byte-pair-encoding tokenizer, from open_clip's bundled vocabulary (no download).

Owns the one shared `SimpleTokenizer` instance (building it reads and merges the 49k-entry BPE table, so it is made
once per process), the special token ids SD1.x and SD2.x share, and the text clean-up. The clean-up follows
transformers' `CLIPTokenizer` as ComfyUI runs it (ComfyUI does not install ftfy): Unicode NFC, whitespace runs
collapsed, lower-cased; unlike open_clip's own clean-up, no ftfy fixes (curly quotes stay curly) and no HTML-entity
unescaping; the literal strings `<|startoftext|>`/`<|endoftext|>` in a prompt are the special tokens. The BPE scheme is Sennrich et al. (2016), "Neural Machine Translation of Rare Words with
Subword Units", as used by CLIP (Radford et al., 2021).
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

BOS_TOKEN = 49406  # <|startoftext|>
EOS_TOKEN = 49407  # <|endoftext|>
VOCAB_SIZE = 49408
_SPECIAL = {"<|startoftext|>": BOS_TOKEN, "<|endoftext|>": EOS_TOKEN}
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in _SPECIAL) + ")")


def _clean(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split()).lower()


@lru_cache(maxsize=1)
def clip_bpe() -> SimpleTokenizer:
    """The process-wide CLIP tokenizer (open_clip is imported on first use: it pulls torchvision, seconds of start-up)."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    if (tokenizer.sot_token_id, tokenizer.eot_token_id) != (BOS_TOKEN, EOS_TOKEN):
        raise RuntimeError("open_clip's bundled vocabulary does not have CLIP's start/end token ids")
    tokenizer.clean_fn = _clean
    return tokenizer


def encode_text(text: str) -> list[int]:
    """Token ids of `text` without start/end tokens (special-token strings in the text map to their ids)."""
    bpe = clip_bpe()
    ids: list[int] = []
    for piece in _SPECIAL_SPLIT.split(text):
        if piece in _SPECIAL:
            ids.append(_SPECIAL[piece])
        elif piece:
            ids.extend(bpe.encode(piece))
    return ids
