"""Prompt text to weighted CLIP token chunks, with ComfyUI's syntax and chunking (`comfy/sd1_clip.py`).

Owns:
- the weight syntax: `(text)` multiplies the weight by 1.1 per level, `(text:1.3)` sets it to 1.3 (an explicit
  weight replaces the inherited one; it does not multiply), `\\(` and `\\)` are literal parentheses, and square
  brackets are plain text (ComfyUI gives `[text]` no meaning);
- `embedding:NAME` references, replaced by the textual-inversion vectors of `diffusion/text/embeddings.py`;
- chunking into rows of 77 = start token + 75 + end token, padded (SD1 with end-of-text, SD2 with 0). Text is
  tokenized per weighted segment; a segment shorter than 8 tokens that does not fit the current chunk moves whole to
  the next one, a longer one is cut where the chunk is full (ComfyUI's `max_word_length` rule).

A token is an `int` vocabulary id or a 1-D tensor (one embedding vector); a chunk is a list of (token, weight), or
of (token, weight, word id) when asked for word ids.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch

from diffusion.text.embeddings import load_embedding
from diffusion.text.tokenizer import BOS_TOKEN, EOS_TOKEN, encode_text

log = logging.getLogger(__name__)

Token = int | torch.Tensor
Chunk = list[tuple[Token, float] | tuple[Token, float, int]]

EMBEDDING_PREFIX = "embedding:"
PAREN_WEIGHT = 1.1
# Placeholders for escaped parentheses while the weights are parsed (characters no prompt contains).
_ESC_CLOSE, _ESC_OPEN = "\0\1", "\0\2"


def _escape(text: str) -> str:
    return text.replace("\\)", _ESC_CLOSE).replace("\\(", _ESC_OPEN)


def _unescape(text: str) -> str:
    return text.replace(_ESC_CLOSE, ")").replace(_ESC_OPEN, "(")


def _top_level_groups(text: str) -> list[str]:
    """Split `text` into plain runs and outermost `( ... )` groups (unbalanced input handled as ComfyUI does)."""
    parts: list[str] = []
    current = ""
    depth = 0
    for char in text:
        if char == "(":
            if depth == 0:
                if current:
                    parts.append(current)
                current = ""
            current += char
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                parts.append(current + ")")
                current = ""
            else:
                current += char
        else:
            current += char
    if current:
        parts.append(current)
    return parts


def _weighted(text: str, weight: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for part in _top_level_groups(text):
        if len(part) < 2 or part[0] != "(" or part[-1] != ")":
            out.append((part, weight))
            continue
        inner, inner_weight = part[1:-1], weight * PAREN_WEIGHT
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner_weight = float(inner[colon + 1:])
                inner = inner[:colon]
            except ValueError:
                pass  # "(a:b)" without a number is text weighted 1.1, colon kept
        out.extend(_weighted(inner, inner_weight))
    return out


def parse_prompt_weights(text: str) -> list[tuple[str, float]]:
    """Segments of `text` with their weights: "a (b:1.5) ((c))" -> [("a ", 1.0), ("b", 1.5), ("c", 1.21)]."""
    return [(_unescape(segment), weight) for segment, weight in _weighted(_escape(text), 1.0)]


def _split_embedding_refs(segment: str) -> list[str]:
    """Cut a segment before each `embedding:` that starts the segment or follows a space or newline."""
    pieces = re.split(f" {EMBEDDING_PREFIX}|\n{EMBEDDING_PREFIX}", segment)
    return [p for p in [pieces[0]] + [EMBEDDING_PREFIX + p for p in pieces[1:]] if p != ""]


@dataclass
class PromptTokenizer:
    """Tokenizes prompts for one text encoder.

    `embedding_directories` None disables `embedding:` references (they stay text); `embedding_size` is the text
    encoder's width (768 SD1, 1024 SD2); `pad_token` its padding id.
    """

    embedding_directories: list[str] | None = None
    embedding_size: int = 768
    pad_token: int = EOS_TOKEN
    max_length: int = 77
    max_word_length: int = 8
    embedding_key: str | None = "clip_l"

    def _embedding(self, name: str) -> torch.Tensor | None:
        # Read on every use, not cached: a file added or replaced between prompts is picked up.
        return load_embedding(name, self.embedding_directories or [], self.embedding_size, self.embedding_key)

    def _resolve_embedding(self, reference: str) -> tuple[torch.Tensor | None, str]:
        """(vectors, text left over) for the text after `embedding:`; trailing commas may end the name."""
        words = reference.split()
        name, leftover = (words[0], " ".join(words[1:])) if words else ("", "")
        vectors = self._embedding(name) if name else None
        stripped = name.strip(",")
        if vectors is None and stripped and len(stripped) < len(name):
            vectors = self._embedding(stripped)
            leftover = f"{name[len(stripped):]} {leftover}"
        if vectors is None:
            log.warning("embedding:%s was not found or could not be used; the word is left out of the prompt", name)
        return vectors, leftover

    def encode_piece(self, text: str) -> list[int]:
        """The vocabulary ids of a run of plain text (CLIP's BPE; another tower's tokenizer overrides this)."""
        return encode_text(text)

    def token_groups(self, text: str) -> list[Chunk]:
        """The prompt as groups of (token, weight): one per weighted text run and one per embedding."""
        groups: list[Chunk] = []
        for segment, weight in parse_prompt_weights(text):
            for piece in _split_embedding_refs(segment):
                if piece.startswith(EMBEDDING_PREFIX) and self.embedding_directories is not None:
                    vectors, piece = self._resolve_embedding(piece[len(EMBEDDING_PREFIX):].strip("\n"))
                    if vectors is not None:
                        groups.append([(row, weight) for row in vectors])
                    if piece == "":
                        continue
                groups.append([(t, weight) for t in self.encode_piece(piece)])
        return groups

    def tokenize(self, text: str, return_word_ids: bool = False) -> list[Chunk]:
        """The prompt as chunks of exactly `max_length` (token, weight) pairs, each BOS … EOS pad…

        With `return_word_ids` each entry is (token, weight, word id) as in ComfyUI: the 1-based index of the group
        the token came from, 0 for start, end and padding tokens.
        """
        special = (0,) if return_word_ids else ()
        bos, eos, pad = (BOS_TOKEN, 1.0, *special), (EOS_TOKEN, 1.0, *special), (self.pad_token, 1.0, *special)
        chunks: list[Chunk] = [[bos]]
        room = self.max_length - 1  # the end token always needs a place
        for index, pairs in enumerate(self.token_groups(text), start=1):
            group = [(t, w, index) for t, w in pairs] if return_word_ids else pairs
            cut_anywhere = len(group) >= self.max_word_length
            while group:
                chunk = chunks[-1]
                if len(chunk) + len(group) <= room:
                    chunk.extend(group)
                    break
                free = room - len(chunk)
                if cut_anywhere:
                    chunk.extend(group[:free])
                    group = group[free:]
                    chunk.append(eos)
                else:
                    chunk.append(eos)
                    chunk.extend([pad] * free)
                chunks.append([bos])
        last = chunks[-1]
        last.append(eos)
        last.extend([pad] * (self.max_length - len(last)))
        return chunks

    def empty_chunk(self) -> Chunk:
        """The empty prompt's chunk: BOS EOS pad…"""
        return [(BOS_TOKEN, 1.0), (EOS_TOKEN, 1.0)] + [(self.pad_token, 1.0)] * (self.max_length - 2)


def chunk_ids(chunks: list[Chunk], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(ids B×T long, weights B×T, extra rows E×C or None): embedding vectors become ids vocab_size, +1, …"""
    extra: list[torch.Tensor] = []
    ids: list[list[int]] = []
    for chunk in chunks:
        row = []
        for token, *_ in chunk:
            if isinstance(token, torch.Tensor):
                row.append(vocab_size + len(extra))
                extra.append(token)
            else:
                row.append(int(token))
        ids.append(row)
    weights = torch.tensor([[item[1] for item in chunk] for chunk in chunks], dtype=torch.float32)
    rows = torch.stack([e.float() for e in extra]) if extra else None
    return torch.tensor(ids, dtype=torch.long), weights, rows
