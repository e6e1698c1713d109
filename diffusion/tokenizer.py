"""CLIP's byte-pair-encoding tokenizer, from open_clip's bundled vocabulary (no download).

Owns the one shared `SimpleTokenizer` instance (building it reads and merges the 49k-entry BPE table, so it is made
once per process) and the special token ids SD1.x and SD2.x share. The BPE scheme is Sennrich et al. (2016), "Neural
Machine Translation of Rare Words with Subword Units", as used by CLIP (Radford et al., 2021).
"""
from __future__ import annotations

from functools import lru_cache

from open_clip.tokenizer import SimpleTokenizer

BOS_TOKEN = 49406  # <|startoftext|>
EOS_TOKEN = 49407  # <|endoftext|>
VOCAB_SIZE = 49408


@lru_cache(maxsize=1)
def clip_bpe() -> SimpleTokenizer:
    """The process-wide CLIP tokenizer (lower-cases, fixes text with ftfy, collapses whitespace)."""
    tokenizer = SimpleTokenizer()
    if (tokenizer.sot_token_id, tokenizer.eot_token_id) != (BOS_TOKEN, EOS_TOKEN):
        raise RuntimeError("open_clip's bundled vocabulary does not have CLIP's start/end token ids")
    return tokenizer


def encode_text(text: str) -> list[int]:
    """Token ids of `text` without start/end tokens."""
    return clip_bpe().encode(text)
