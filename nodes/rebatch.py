"""Rebatching: RebatchImages and RebatchLatents (ComfyUI's `comfy_extras/nodes_rebatch.py`).

Both take the whole list of their input (`INPUT_IS_LIST`) and return a list of batches of at
most `batch_size` items (`OUTPUT_IS_LIST`), so a list of single images becomes batches and a
big batch becomes a list. Images are split into single images and regrouped in order, so all
must share one size. Latents are grouped in order while their spatial size stays the same (a
size change starts a new group); within a group samples, noise masks (all-ones where a latent
has none, resized to the pixel size of its samples) and `batch_index` values are carried
together; a batch whose mask is all ones drops it again. `batch_index` defaults to the running
position of each latent in the list, as ComfyUI numbers them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from nodes.spec import Input, Int, Node, Output

Latent = dict[str, Any]


class RebatchImages(Node):
    """Regroups a list of image batches into batches of `batch_size` images."""

    DISPLAY_NAME = "Rebatch Images"
    CATEGORY = "image/batch"
    INPUT_IS_LIST = True
    INPUTS = (Input("images", "IMAGE"), Int("batch_size", 1, min=1, max=4096))
    OUTPUTS = (Output("IMAGE", is_list=True),)

    def execute(self, images: list[torch.Tensor], batch_size: list[int]) -> tuple[list[torch.Tensor]]:
        size = int(batch_size[0])
        singles = [image[i:i + 1] for image in images for i in range(image.shape[0])]
        return ([torch.cat(singles[i:i + size], dim=0) for i in range(0, len(singles), size)],)


def _mask_for(latent: Latent) -> torch.Tensor:
    """The latent's noise mask as B×1×(8h)×(8w), all ones when it has none."""
    samples = latent["samples"]
    batch, height, width = samples.shape[0], samples.shape[-2] * 8, samples.shape[-1] * 8
    mask = latent.get("noise_mask")
    if mask is None:
        return torch.ones((batch, 1, height, width))
    mask = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float().cpu()
    if mask.shape[-2:] != (height, width):
        mask = F.interpolate(mask, size=(height, width), mode="bilinear")
    if mask.shape[0] < batch:
        mask = mask.repeat((batch - 1) // mask.shape[0] + 1, 1, 1, 1)
    return mask[:batch]


def _groups(latents: list[Latent]) -> list[tuple[torch.Tensor, torch.Tensor, list[int]]]:
    """Consecutive latents of one spatial size, joined: (samples, masks, batch indices)."""
    groups: list[tuple[list[torch.Tensor], list[torch.Tensor], list[int]]] = []
    position = 0
    for latent in latents:
        samples = latent["samples"]
        indices = list(latent.get("batch_index") or range(position, position + samples.shape[0]))
        position += len(indices)
        if not groups or groups[-1][0][0].shape[-2:] != samples.shape[-2:]:
            groups.append(([], [], []))
        groups[-1][0].append(samples)
        groups[-1][1].append(_mask_for(latent))
        groups[-1][2].extend(indices)
    return [(torch.cat(s), torch.cat(m), i) for s, m, i in groups]


class RebatchLatents(Node):
    """Regroups a list of latent batches into batches of `batch_size` latents."""

    DISPLAY_NAME = "Rebatch Latents"
    CATEGORY = "latent/batch"
    INPUT_IS_LIST = True
    INPUTS = (Input("latents", "LATENT"), Int("batch_size", 1, min=1, max=4096))
    OUTPUTS = (Output("LATENT", is_list=True),)

    def execute(self, latents: list[Latent], batch_size: list[int]) -> tuple[list[Latent]]:
        size = int(batch_size[0])
        batches: list[Latent] = []
        for samples, masks, indices in _groups(latents):
            for start in range(0, samples.shape[0], size):
                batch: Latent = {"samples": samples[start:start + size], "batch_index": indices[start:start + size]}
                mask = masks[start:start + size]
                if mask.mean() != 1.0:
                    batch["noise_mask"] = mask
                batches.append(batch)
        return (batches,)

NODES = [RebatchImages, RebatchLatents]
