"""unCLIP noise augmentation is seeded with the sampler's seed − 10 (ComfyUI's SD21UNCLIP.encode_adm), on a tiny
unCLIP checkpoint loaded through the real executor: the seed reaches `extra_conds` through `sample` and the guider.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from diffusion.sampling.guidance import CFGGuider
from diffusion.sampling.sample import sample
from diffusion.adapters.unclip import UnCLIPModel, unclip_adm
from tests.fixtures.tiny_clip_vision import tiny_unclip_checkpoint_state_dict
from tests.nodes.ops_env import _feed_node
from tests.nodes.sd_env import SDEnv, txt2img


def unclip_parts(tmp_path: Path, noise_augmentation: float) -> tuple[UnCLIPModel, list, list]:
    """(the unCLIP model, positive with an unCLIP image entry, negative) from the executor."""
    env = SDEnv(tmp_path, family="sd21")
    save_file(tiny_unclip_checkpoint_state_dict(), str(tmp_path / "models" / "checkpoints" / "unclip.safetensors"))
    fed: dict[str, Any] = {"img": torch.rand((1, 48, 48, 3), generator=torch.Generator().manual_seed(5))}
    env.registry.register(_feed_node(fed))
    prompt = txt2img(ckpt="unclip.safetensors")
    prompt["4"]["class_type"] = "unCLIPCheckpointLoader"
    prompt["img"] = {"class_type": "Feed", "inputs": {"key": "img"}}
    prompt["enc"] = {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["4", 3], "image": ["img", 0],
                                                                  "crop": "center"}}
    prompt["un"] = {"class_type": "unCLIPConditioning", "inputs": {
        "conditioning": ["6", 0], "clip_vision_output": ["enc", 0], "strength": 1.0,
        "noise_augmentation": noise_augmentation}}
    keep = ("4", "6", "7", "img", "enc", "un")
    handle = env.value({k: prompt[k] for k in keep}, "4")
    positive = env.value({k: prompt[k] for k in keep}, "un")
    negative = env.value({k: prompt[k] for k in keep}, "7")
    model = handle.model
    assert isinstance(model, UnCLIPModel)
    return model, positive, negative


def adm_of(model: UnCLIPModel, positive: list, seed: int | None) -> torch.Tensor:
    guider = CFGGuider(model)
    guider.set_conds(positive, [])
    guider.prepare(torch.zeros(1, 4, 4, 4), None, None, seed=seed)
    return guider.conds["positive"][0]["model_conds"]["y"]


def test_augmentation_follows_the_seed(tmp_path: Path) -> None:
    model, positive, _ = unclip_parts(tmp_path, 0.5)
    entries = positive[0][1]["unclip_conditioning"]
    y7, y7_again, y8 = adm_of(model, positive, 7), adm_of(model, positive, 7), adm_of(model, positive, 8)
    assert torch.equal(y7, y7_again) and (y7 - y8).abs().max() > 1e-3
    torch.testing.assert_close(y7, unclip_adm(entries, model.noise_augmentor, 7 - 10), rtol=0, atol=0)
    # No seed (a direct guider call) counts as seed 0, ComfyUI's default: the earlier fixed −10.
    torch.testing.assert_close(adm_of(model, positive, None), unclip_adm(entries, model.noise_augmentor, -10),
                               rtol=0, atol=0)


def test_sample_passes_its_seed_to_the_augmentation(tmp_path: Path) -> None:
    model, positive, negative = unclip_parts(tmp_path, 0.5)
    latent = torch.zeros(1, 4, 4, 4)
    noise = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))

    def run(seed: int, pos: list) -> torch.Tensor:
        # The same starting noise each time: with a deterministic sampler only the augmentation sees the seed.
        with torch.no_grad():
            return sample(model, noise=noise.clone(), positive=pos, negative=negative, cfg=5.0, sampler_name="euler",
                          scheduler="normal", steps=2, latent_image=latent, seed=seed)

    assert torch.equal(run(3, positive), run(3, positive))
    assert (run(3, positive) - run(4, positive)).abs().max() > 1e-4
    plain = [[t, {k: v for k, v in o.items() if k != "unclip_conditioning"}] for t, o in positive]
    assert torch.equal(run(3, plain), run(4, plain))
