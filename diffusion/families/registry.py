"""The family registry: every `ModelFamily` by name, and detection as "the first family whose rule matches".

`register(family)` adds one (the family modules of this package call it on import; a pack could too),
`get_family(name)` looks one up (accepting the aliases "sd15", "sd21"), `families()` lists them in the order
detection asks them, and `family_for(evidence)` picks the family of a UNet. Adding a family is adding a module
that calls `register`; nothing here changes.
"""
from __future__ import annotations

from diffusion.files.checkpoint import CheckpointError
from diffusion.families.base import Evidence, ModelFamily
from diffusion.files.latent_formats import LatentFormat

_FAMILIES: dict[str, ModelFamily] = {}
ALIASES = {"sd15": "sd1", "sd21": "sd2"}


def register(family: ModelFamily) -> ModelFamily:
    """Add `family` (replacing one of the same name) and return it."""
    _FAMILIES[family.name] = family
    return family


def families() -> list[ModelFamily]:
    """The registered families, highest priority first (the order detection asks them in)."""
    return sorted(_FAMILIES.values(), key=lambda f: -f.priority)


def get_family(name: str) -> ModelFamily:
    """The family called `name` ("sd1", "sd2", "sdxl", ...); `KeyError` naming the known ones otherwise."""
    key = ALIASES.get(name.lower(), name.lower())
    try:
        return _FAMILIES[key]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {sorted(_FAMILIES)}") from None


def family_for(evidence: Evidence) -> ModelFamily:
    """The first family (by priority) whose rule accepts `evidence`; `CheckpointError` describing the UNet when
    none does."""
    for family in families():
        if family.matches(evidence):
            return family
    s = evidence.shapes
    raise CheckpointError(
        f"unknown UNet family: context width {s.context_dim}, ADM width {s.adm_in_channels}, model channels "
        f"{s.model_channels}, channel multipliers {s.channel_mult}, transformer depths {s.depth_in}; known "
        f"families: {[f.name for f in families()]}"
    )


def latent_format_for(family: str) -> LatentFormat:
    """The latent format family `family` declares ("sd1", "sd2", "sdxl", ...); ValueError for an unknown name."""
    try:
        return get_family(family).latent_format
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
