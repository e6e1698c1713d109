"""CLIP's byte-pair-encoding tokenizer over the BPE table open_clip_torch ships (no download, no open_clip import).

Owns the one shared `ClipBPE` instance (building it reads and ranks the 49k-entry merge table, so it is made once per
process), the special token ids SD1.x and SD2.x share, and the text clean-up. The clean-up and the splitting follow
transformers' `CLIPTokenizer` as ComfyUI runs it (ComfyUI does not install ftfy): Unicode NFC, whitespace runs
collapsed, lower-cased; no ftfy fixes (curly quotes stay curly) and no HTML-entity unescaping; the literal strings
`<|startoftext|>`/`<|endoftext|>` in a prompt are the special tokens. The BPE scheme is Sennrich et al. (2016),
"Neural Machine Translation of Rare Words with Subword Units", over UTF-8 bytes as used by CLIP (Radford et al.,
2021). The table is read from open_clip's package folder without importing open_clip (which pulls torchvision and
torch._dynamo: about 2.5 s of the first prompt in a fresh process).
"""
from __future__ import annotations

import gzip
import importlib.util
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

import regex

BOS_TOKEN = 49406  # <|startoftext|>
EOS_TOKEN = 49407  # <|endoftext|>
VOCAB_SIZE = 49408
MERGES = 49152 - 256 - 2  # CLIP's merge count: the vocabulary is 256 bytes ×2 (word-final or not) + merges + 2
_SPECIAL = {"<|startoftext|>": BOS_TOKEN, "<|endoftext|>": EOS_TOKEN}
_SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in _SPECIAL) + ")")
# CLIP's pre-tokenisation: English contractions, letter runs, single digits, runs of other non-space characters.
_WORDS = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


def _clean(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split()).lower()


def byte_symbols() -> dict[int, str]:
    """The printable character standing for each byte value (GPT-2/CLIP's reversible byte alphabet): the printable
    Latin-1 bytes stand for themselves, the rest map in byte order onto code points from 256 up. The dict's order
    (printable bytes first) is the order of the first 256 vocabulary entries."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    extra = 256
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(extra)
            extra += 1
    return symbols


def bundled_merges_path() -> Path:
    """open_clip_torch's `bpe_simple_vocab_16e6.txt.gz`, found through the import system without importing it."""
    spec = importlib.util.find_spec("open_clip")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return path
    raise RuntimeError("CLIP's BPE table (open_clip_torch's bpe_simple_vocab_16e6.txt.gz) is not installed")


class ClipBPE:
    """CLIP's byte-level BPE: `encoder` maps each vocabulary string to its id; `encode` turns clean text into ids."""

    def __init__(self, merges_path: Path) -> None:
        lines = gzip.open(merges_path).read().decode("utf-8").split("\n")[1: MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        alphabet = byte_symbols()
        self.byte_symbol = [alphabet[b] for b in range(256)]
        vocab = [*alphabet.values(), *(s + "</w>" for s in alphabet.values()), *("".join(m) for m in merges),
                 *_SPECIAL]
        self.encoder: dict[str, int] = {piece: i for i, piece in enumerate(vocab)}
        self.ranks: dict[tuple[str, ...], int] = {m: i for i, m in enumerate(merges)}
        self._cache: dict[str, list[int]] = {}

    def _merge(self, word: str) -> list[str]:
        """The word's symbols (its last one marked word-final) merged pair by pair, lowest-ranked pair first."""
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, MERGES))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in _WORDS.findall(_clean(text)):
            symbols = "".join(self.byte_symbol[b] for b in word.encode("utf-8"))
            if symbols not in self._cache:
                self._cache[symbols] = [self.encoder[p] for p in self._merge(symbols)]
            ids.extend(self._cache[symbols])
        return ids


@lru_cache(maxsize=1)
def clip_bpe() -> ClipBPE:
    """The process-wide CLIP tokenizer."""
    tokenizer = ClipBPE(bundled_merges_path())
    if (tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]) != (BOS_TOKEN, EOS_TOKEN):
        raise RuntimeError("the bundled BPE table does not give CLIP's start/end token ids")
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
