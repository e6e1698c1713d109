"""ComfyUI's `comfy.cldm.cldm` for custom node packs: `ControlNet`, the ControlNet network class, as Loom's
(`diffusion.adapters.controlnet.ControlNetNet`: LDM `cldm.ControlNet`'s layout, `input_hint_block`, `zero_convs`,
`middle_block_out`), for `isinstance` checks and the attributes packs read."""
from __future__ import annotations

from typing import Any

from diffusion.adapters.controlnet import ControlNetNet as ControlNet  # noqa: F401

BINDING: Any  # set by compat.install_compat before this module runs
