"""ComfyUI's `comfy.model_base` for custom node packs: `ModelType` and the model class names (`BaseModel`,
`SD15` is ComfyUI's BaseModel, `SDXL`, `SDXLRefiner`, `SD3`, ...) as `isinstance` checks on Loom's models.

Loom has one model class, `diffusion.networks.diffusion_model.DiffusionModel`, with a `family`; `isinstance(model.model,
comfy.model_base.SDXL)` asks for that family. `ModelType` members compare equal to Loom's prediction names, so
`model.model.model_type == ModelType.V_PREDICTION` works (`DiffusionModel.model_type`); `model_type_of` gives the
enum member itself.
"""
from __future__ import annotations

import enum
from typing import Any

from diffusion.networks.diffusion_model import DiffusionModel

BINDING: Any  # set by compat.install_compat before this module runs


class ModelType(str, enum.Enum):
    """ComfyUI's parameterisations; the values are Loom's prediction names."""

    EPS = "eps"
    V_PREDICTION = "v_prediction"
    V_PREDICTION_EDM = "v_prediction_edm"
    STABLE_CASCADE = "stable_cascade"
    EDM = "edm"
    FLOW = "flow"
    V_PREDICTION_CONTINUOUS = "v_prediction_continuous"
    FLUX = "flux"
    IMG_TO_IMG = "img_to_img"
    FLOW_COSMOS = "flow_cosmos"


def model_type_of(model: Any) -> ModelType:
    """The ModelType member of a Loom DiffusionModel (or MODEL handle)."""
    dm = model if isinstance(model, DiffusionModel) else getattr(model, "model", model)
    try:
        return ModelType(getattr(dm, "model_type", "eps"))
    except ValueError:
        return ModelType.EPS


class _FamilyMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        if not isinstance(obj, DiffusionModel):
            return False
        families = cls.__dict__.get("families")
        return families is None or obj.family in families


class BaseModel(metaclass=_FamilyMeta):
    """Every Loom diffusion model (ComfyUI's base class of all models; SD1.x and SD2.x use it directly)."""

    families: tuple[str, ...] | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"comfy.model_base.{cls.__name__} is an isinstance check on Loom's models; Loom builds "
                        f"models with its loaders (comfy.sd.load_checkpoint_guess_config, load_diffusion_model)")


class SD15(BaseModel):
    families = ("sd1",)


class SD21(BaseModel):
    families = ("sd2",)


class SDXL(BaseModel):
    families = ("sdxl",)


class SDXLRefiner(BaseModel):
    families = ("sdxl_refiner",)


class SD3(BaseModel):
    families = ("sd3",)
