"""ComfyUI's `comfy.samplers.CFGGuider` and the guidance functions packs call from `predict_noise`, over Loom's
guidance (`diffusion.sampling.guidance`) and sampling (`diffusion.sampling.sample`).

`CFGGuider(model)` takes a MODEL value. Packs subclass it and override `predict_noise(x, timestep, model_options,
seed)` (or `set_conds` / `inner_set_conds`, `sample`, `outer_sample`, `inner_sample`); it is also a Loom guider,
so it goes into SamplerCustomAdvanced through a GUIDER socket. The call chain is ComfyUI's:

    sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
      -> OUTER_SAMPLE wrappers -> outer_sample(...)   places the model (sampler_helpers.prepare_sampling)
      -> inner_sample(noise, latent_image, device, sampler, sigmas, ...)   Loom's sample_custom
      -> each evaluation: __call__ -> PREDICT_NOISE wrappers -> predict_noise(x, timestep, model_options, seed)

Functions are looked up on `comfy.samplers` when called (`sampling_function`, `calc_cond_batch`), so a pack that
replaces them there changes what the guiders do (Loom's own KSampler nodes do not go through them).
`inner_model` is Loom's diffusion model (`apply_model`, `model_sampling`, `process_latent_in/out`, `extra_conds`);
`self.conds` holds the prepared cond dicts during a run. `sample` returns the raw VAE latent on the CPU.
"""
from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import torch

from compat.comfy_sampler import run_sampler
from compat.patcher_extension import WrapperExecutor, WrappersMP, copy_nested_dicts, get_all_wrappers
from compat.patcher_extension import merge_nested_dicts
from compat.sampler_helpers import cleanup_models, convert_cond, prepare_mask, prepare_sampling
from diffusion.sampling.conditioning import calc_cond_batch as _calc_cond_batch
from diffusion.sampling.guidance import CFGGuider as _LoomGuider
from diffusion.sampling.guidance import DualCFGGuider as _LoomDualGuider
from diffusion.sampling.guidance import cfg_function as _cfg_function
from diffusion.sampling.guidance import prepare_conds
from diffusion.sampling.guidance import sampling_function as _sampling_function
from diffusion.patcher import ModelHandle
from diffusion.sampling.sample import Sampler as LoomSampler
from diffusion.sampling.sample import sample_custom
from nodes.context import current_or_none

Callback = Callable[[int, torch.Tensor, torch.Tensor, int], None] | None


def handle_of(model: Any) -> Any:
    """The MODEL value behind `model` (a MODEL itself, or an object carrying one as `.handle`)."""
    return model if isinstance(model, ModelHandle) else getattr(model, "handle", model)


def model_options_of(model: Any) -> dict:
    """The MODEL's model_options dict itself (ComfyUI's guider shares it, and clones it for each run)."""
    handle = handle_of(model)
    options = getattr(handle, "options", None)
    if not isinstance(options, dict):
        options = getattr(handle, "model_options", None)
    if not isinstance(options, dict):
        raise TypeError(f"CFGGuider needs a MODEL value, got {type(model).__name__}")
    return options


def _overrides_sample(sampler: Any) -> bool:
    """Whether a SAMPLER value has a `sample` of a pack's own (a KSAMPLER subclass overriding it)."""
    method = getattr(type(sampler), "sample", None)
    return method is not None and not getattr(method, "loom_builtin", False)


def _patched(name: str, own: Callable) -> Callable:
    """`comfy.samplers.<name>` as it is now: a pack that replaced the function there (a monkeypatch) is obeyed."""
    module = sys.modules.get("comfy.samplers")
    return getattr(module, name, own) if module is not None else own


def calc_cond_batch(model: Any, conds: list, x_in: torch.Tensor, timestep: torch.Tensor,
                    model_options: dict) -> list[torch.Tensor]:
    """ComfyUI's `calc_cond_batch(model, conds, x, timestep, model_options)`: one prediction per cond list (zeros
    for None), through the CALC_COND_BATCH wrappers of the model options."""
    def run(model: Any, conds: list, x_in: torch.Tensor, timestep: torch.Tensor, model_options: dict) -> list:
        return _calc_cond_batch(model.apply_model, conds, x_in, timestep, model_options)

    wrappers = get_all_wrappers(WrappersMP.CALC_COND_BATCH, model_options or {}, is_model_options=True)
    return WrapperExecutor.new_executor(run, wrappers).execute(model, conds, x_in, timestep, model_options)


def cfg_function(model: Any, cond_pred: torch.Tensor, uncond_pred: torch.Tensor, cond_scale: float, x: torch.Tensor,
                 timestep: torch.Tensor, model_options: dict | None = None, cond: Any = None,
                 uncond: Any = None) -> torch.Tensor:
    """ComfyUI's `cfg_function`: the CFG mix (or `sampler_cfg_function`), then the post-CFG functions."""
    return _cfg_function(model, cond_pred, uncond_pred, cond_scale, x, timestep, model_options or {}, cond, uncond)


def _wrapped_batch(args: dict) -> list[torch.Tensor]:
    batch = _patched("calc_cond_batch", calc_cond_batch)
    return batch(args["model"], args["conds"], args["input"], args["sigma"], args["model_options"])


def sampling_function(model: Any, x: torch.Tensor, timestep: torch.Tensor, uncond: Any, cond: Any,
                      cond_scale: float, model_options: dict | None = None, seed: int | None = None) -> torch.Tensor:
    """ComfyUI's `sampling_function`: the guided denoised prediction with cond/uncond batched, the pre-CFG
    functions, the CFG mix and the post-CFG functions."""
    options = dict(model_options or {})
    wrapped = get_all_wrappers(WrappersMP.CALC_COND_BATCH, options, is_model_options=True)
    if (wrapped or _patched("calc_cond_batch", calc_cond_batch) is not calc_cond_batch) \
            and "sampler_calc_cond_batch_function" not in options:
        options["sampler_calc_cond_batch_function"] = _wrapped_batch
    return _sampling_function(model.apply_model, x, timestep, uncond, cond, cond_scale, options, model=model)


class CFGGuider(_LoomGuider):
    """ComfyUI's CFGGuider (see the module docstring)."""

    def __init__(self, model_patcher: Any) -> None:
        options = model_options_of(model_patcher)
        handle = handle_of(model_patcher)
        super().__init__(handle.model)
        self.model_patcher = model_patcher
        self.handle = handle  # what SamplerCustomAdvanced has the memory manager place
        self.model_options = options
        self.inner_model = handle.model
        self._run_conds: dict[str, list[dict]] | None = None

    # --- conditioning ---------------------------------------------------------------------------------------
    def set_conds(self, positive: list, negative: list) -> None:
        self.inner_set_conds({"positive": positive, "negative": negative})

    def set_cfg(self, cfg: float) -> None:
        self.cfg = cfg

    def inner_set_conds(self, conds: dict[str, list]) -> None:
        """Store CONDITIONING lists by name ("positive", "negative", or a pack's own) as cond dicts."""
        for name, value in conds.items():
            self.original_conds[name] = convert_cond(value)

    def prepare(self, noise: torch.Tensor, latent_image: torch.Tensor | None, denoise_mask: torch.Tensor | None,
                seed: int | None = None) -> None:
        """Resolve the conds of this run (those `sample` copied, as an OUTER_SAMPLE wrapper may have left them)."""
        source = self._run_conds if self._run_conds is not None else self.original_conds
        self.conds = prepare_conds(self.inner_model, source, noise, latent_image, denoise_mask, seed)

    # --- predictions ----------------------------------------------------------------------------------------
    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict | None = None,
                      seed: int | None = None) -> torch.Tensor:
        """The denoised prediction at `timestep` (a sigma); CFG of positive against negative by default
        (through `comfy.samplers.sampling_function` as it is now, so a pack's monkeypatch of it applies)."""
        guided = _patched("sampling_function", sampling_function)
        return guided(self.inner_model, x, timestep, self.conds.get("negative"), self.conds.get("positive"), self.cfg,
                      model_options=model_options, seed=seed)

    def outer_predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict | None = None,
                            seed: int | None = None) -> torch.Tensor:
        options = model_options if model_options is not None else self.model_options
        wrappers = get_all_wrappers(WrappersMP.PREDICT_NOISE, options, is_model_options=True)
        return WrapperExecutor.new_class_executor(self.predict_noise, self, wrappers).execute(x, timestep, options,
                                                                                            seed)

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict) -> torch.Tensor:
        return self.outer_predict_noise(x, sigma, model_options)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict | None = None,
                 seed: int | None = None, **_: Any) -> torch.Tensor:
        return self.outer_predict_noise(x, sigma, model_options, seed)

    # --- sampling -------------------------------------------------------------------------------------------
    def sample(self, noise: torch.Tensor, latent_image: torch.Tensor | None, sampler: Any, sigmas: torch.Tensor,
               denoise_mask: torch.Tensor | None = None, callback: Callback = None, disable_pbar: bool = False,
               seed: int | None = None) -> torch.Tensor:
        """Sample from `noise` + `latent_image` (raw VAE latents) over `sigmas` with a SAMPLER value."""
        if latent_image is None:
            latent_image = torch.zeros_like(noise)
        if sigmas.shape[-1] == 0:
            return latent_image
        self.conds = {k: [dict(c) for c in v] for k, v in self.original_conds.items()}
        original = self.model_options
        self.model_options = self._run_options(original)
        try:
            wrappers = get_all_wrappers(WrappersMP.OUTER_SAMPLE, self.model_options, is_model_options=True)
            executor = WrapperExecutor.new_class_executor(self.outer_sample, self, wrappers)
            return executor.execute(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            self.model_options = original

    def _run_options(self, options: dict) -> dict:
        """A copy of the model options for one run, with the MODEL's own wrapper/callback registries merged in
        (a MODEL object that keeps them as `.wrappers` / `.callbacks`, as ComfyUI's ModelPatcher does)."""
        run = copy_nested_dicts(options)
        transformer = run.setdefault("transformer_options", {})
        own = options.get("transformer_options", {})
        for name in ("wrappers", "callbacks"):
            registry = getattr(self.model_patcher, name, None)
            # Loom's MODEL keeps its registries in these very options (diffusion/patcher_api.py): merged already
            if isinstance(registry, dict) and registry and registry is not own.get(name):
                transformer[name] = merge_nested_dicts(transformer.get(name, {}), registry)
        return run

    def outer_sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: Any, sigmas: torch.Tensor,
                     denoise_mask: torch.Tensor | None = None, callback: Callback = None, disable_pbar: bool = False,
                     seed: int | None = None) -> torch.Tensor:
        """Place the model (and the conds' models) for the run, sample, release them."""
        self.inner_model, self.conds, self.loaded_models = prepare_sampling(self.model_patcher, tuple(noise.shape),
                                                                            self.conds, self.model_options)
        try:
            return self.inner_sample(noise, latent_image, self.loaded_models.device, sampler, sigmas, denoise_mask,
                                     callback, disable_pbar, seed)
        finally:
            cleanup_models(self.conds, self.loaded_models)
            del self.loaded_models

    def inner_sample(self, noise: torch.Tensor, latent_image: torch.Tensor, device: torch.device, sampler: Any,
                     sigmas: torch.Tensor, denoise_mask: torch.Tensor | None, callback: Callback,
                     disable_pbar: bool, seed: int | None) -> torch.Tensor:
        """Loom's sampling run on the placed model: process_latent_in, conds prepared, the sampler over `sigmas`
        on this guider, process_latent_out."""
        ctx = current_or_none()
        wrappers = get_all_wrappers(WrappersMP.SAMPLER_SAMPLE, self.model_options, is_model_options=True)
        self._run_conds = self.conds
        try:
            with torch.no_grad():
                if wrappers or not isinstance(sampler, LoomSampler) or _overrides_sample(sampler):
                    return self._protocol_sample(noise, latent_image, device, sampler, sigmas, denoise_mask,
                                                 callback, disable_pbar, seed, wrappers)
                return sample_custom(self.inner_model, noise, self, sampler, sigmas, latent_image,
                                     denoise_mask=denoise_mask, callback=callback, seed=seed, device=device,
                                     interrupt_check=ctx.check_interrupted if ctx is not None else None)
        finally:
            self._run_conds = None

    def _protocol_sample(self, noise: torch.Tensor, latent_image: torch.Tensor, device: torch.device, sampler: Any,
                         sigmas: torch.Tensor, denoise_mask: torch.Tensor | None, callback: Callback,
                         disable_pbar: bool, seed: int | None, wrappers: list) -> torch.Tensor:
        """ComfyUI's inner_sample: `sampler.sample(self, sigmas, extra_args, callback, noise, latent_image,
        denoise_mask, disable_pbar)` through the SAMPLER_SAMPLE wrappers (a pack's own Sampler, or wrappers)."""
        noise = noise.to(device=device, dtype=torch.float32)
        latent_image = latent_image.to(device=device, dtype=torch.float32)
        sigmas = sigmas.to(device)
        if denoise_mask is not None:
            denoise_mask = prepare_mask(denoise_mask, tuple(noise.shape), device)
        if torch.count_nonzero(latent_image) > 0:  # an empty latent is not shifted (ComfyUI)
            latent_image = self.inner_model.process_latent_in(latent_image)
        self.prepare(noise, latent_image, denoise_mask, seed=seed)
        options = dict(self.model_options)
        options["transformer_options"] = {**options.get("transformer_options", {}), "sample_sigmas": sigmas,
                                          "hook_keyframes": {}}
        method = sampler.sample if hasattr(sampler, "sample") else functools.partial(run_sampler, sampler)
        executor = WrapperExecutor.new_class_executor(method, sampler, wrappers)
        samples = executor.execute(self, sigmas, {"model_options": options, "seed": seed}, callback, noise,
                                   latent_image, denoise_mask, disable_pbar)
        return self.inner_model.process_latent_out(samples.to(torch.float32)).cpu()



class Guider_Basic(CFGGuider):
    """ComfyUI's `comfy_extras.nodes_custom_sampler.Guider_Basic`: positive conditioning only, no CFG."""

    def set_conds(self, positive: list) -> None:  # type: ignore[override]
        self.inner_set_conds({"positive": positive})

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict | None = None,
                      seed: int | None = None) -> torch.Tensor:
        return calc_cond_batch(self.inner_model, [self.conds.get("positive")], x, timestep, model_options or {})[0]


class Guider_DualCFG(CFGGuider):
    """ComfyUI's `Guider_DualCFG`: `set_conds(positive, middle, negative)`, `set_cfg(cfg1, cfg2, nested=False)`;
    the two-level CFG of Loom's DualCFGGuider."""

    def set_cfg(self, cfg1: float, cfg2: float = 1.0, nested: bool = False) -> None:  # type: ignore[override]
        self.cfg1, self.cfg2, self.nested = cfg1, cfg2, nested

    def set_conds(self, positive: list, middle: list, negative: list) -> None:  # type: ignore[override]
        middle = [[t, {**o, "prompt_type": "negative"}] for t, o in middle]
        self.inner_set_conds({"positive": positive, "middle": middle, "negative": negative})

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: dict | None = None,
                      seed: int | None = None) -> torch.Tensor:
        return _LoomDualGuider.predict(self, x, timestep, model_options or {})  # type: ignore[arg-type]
