"""T5's SentencePiece (unigram) tokenizer, read from a `tokenizer.json` placed beside the weights (no download).

Owns where the tokenizer file is looked for (`tokenizer_candidates`, `find_t5_tokenizer`; the T5 tower keeps the
list and the first file that exists is read when a prompt is tokenized), reading it once per file with the `tokenizers`
library (transformers' own dependency: the same code `T5TokenizerFast` runs, so the ids are ComfyUI's), and
`T5PromptTokenizer`: ComfyUI's T5-XXL tokenizer rules (`comfy/text_encoders/sd3_clip.py` `T5XXLTokenizer` on
`comfy/sd1_clip.py` `SDTokenizer`): the same `(text:1.2)` weights and `embedding:` references as CLIP, no start
token, one chunk however long the prompt, the end token `</s>` (1) after the text, then padding (0) up to 77 tokens.

No package on the registries ships T5's vocabulary under a licence Loom can depend on, so the file comes from the
user: the `tokenizer.json` of `google/t5-v1_1-xxl` (Apache-2.0), the same file ComfyUI ships in
`comfy/text_encoders/t5_tokenizer/`. The places searched, first found wins, for weights `<dir>/<name>.safetensors`
and then each extra folder (the text-encoder folders): `<dir>/<name>.tokenizer.json`,
`<dir>/<name>.tokenizer/tokenizer.json`, `<dir>/t5_tokenizer/tokenizer.json`.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from diffusion.text.prompt import Chunk, PromptTokenizer
from diffusion.text.t5 import T5_EOS_TOKEN, T5_PAD_TOKEN, empty_t5_chunk

if TYPE_CHECKING:
    from tokenizers import Tokenizer

T5_MIN_LENGTH = 77  # ComfyUI pads T5's tokens up to 77, and never cuts them
T5_TOKENIZER_DIR = "t5_tokenizer"


def tokenizer_candidates(weights: str | os.PathLike[str],
                         extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
    """The paths searched for the tokenizer of the T5 weights at `weights`, in order."""
    weights = Path(weights)
    stem = weights.name.split(".", 1)[0]
    found: list[Path] = []
    for folder in (weights.parent, *map(Path, extra_dirs)):
        for path in (folder / f"{stem}.tokenizer.json", folder / f"{stem}.tokenizer" / "tokenizer.json",
                     folder / T5_TOKENIZER_DIR / "tokenizer.json"):
            if path not in found:
                found.append(path)
    return found


def find_t5_tokenizer(weights: str | os.PathLike[str],
                      extra_dirs: Iterable[str | os.PathLike[str]] = ()) -> Path | None:
    """The first tokenizer file that exists for the T5 weights at `weights`, or None."""
    return next((p for p in tokenizer_candidates(weights, extra_dirs) if p.is_file()), None)


def missing_tokenizer_message(source: str) -> str:
    """What to do when the T5 tower of `source` has no tokenizer file."""
    where = f" beside {Path(source).name}" if source else ""
    return (f"T5-XXL needs its tokenizer and none was found{where}: put the tokenizer.json of google/t5-v1_1-xxl "
            f"(the file ComfyUI ships as comfy/text_encoders/t5_tokenizer/tokenizer.json) at "
            f"models/text_encoders/{T5_TOKENIZER_DIR}/tokenizer.json, or beside the weights as "
            f"<name>.tokenizer.json")


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> Tokenizer:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(path)
    except Exception as err:  # the tokenizers library raises its own Exception subclass for unreadable files
        raise ValueError(f"{path} is not a tokenizer.json the tokenizers library can read ({err})") from err


def load_t5_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer in `path`, read once per process while the file is unchanged."""
    path = Path(path)
    return _load(str(path), path.stat().st_mtime_ns)


@dataclass
class T5PromptTokenizer(PromptTokenizer):
    """Prompts to T5 token chunks with the first of `tokenizer_paths` that exists (none: tokenizing is an error that
    says where to put the file)."""

    tokenizer_paths: list[Path] = field(default_factory=list)
    source: str = ""
    pad_token: int = T5_PAD_TOKEN
    embedding_size: int = 4096
    embedding_key: str | None = "t5xxl"

    def encode_piece(self, text: str) -> list[int]:
        """The ids of a run of text without the end token (as ComfyUI cuts it off each piece)."""
        path = next((p for p in self.tokenizer_paths if p.is_file()), None)
        if path is None:
            raise ValueError(missing_tokenizer_message(self.source))
        return load_t5_tokenizer(path).encode(text, add_special_tokens=False).ids

    def tokenize(self, text: str, return_word_ids: bool = False) -> list[Chunk]:
        """One chunk: the prompt's (token, weight) pairs, `</s>`, and padding up to 77 entries; with
        `return_word_ids` (token, weight, group index), 0 for the end token and padding."""
        special = (0,) if return_word_ids else ()
        chunk: Chunk = []
        for index, pairs in enumerate(self.token_groups(text), start=1):
            chunk.extend([(t, w, index) for t, w in pairs] if return_word_ids else pairs)
        chunk.append((T5_EOS_TOKEN, 1.0, *special))
        chunk.extend([(T5_PAD_TOKEN, 1.0, *special)] * (T5_MIN_LENGTH - len(chunk)))
        return [chunk]

    def empty_chunk(self) -> Chunk:
        """The empty prompt's chunk: `</s>` and padding to 77."""
        return empty_t5_chunk(T5_MIN_LENGTH)
