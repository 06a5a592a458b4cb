"""How to run the reverse process: steps, method, noise, and the scheduler details a model ships.

Fields that a diffusers scheduler config sets (timestep spacing, steps offset, x0 clipping, the
final alpha) and the step count default to None, meaning "the model's choice": `resolve` fills them
from the loaded model's defaults, so a converted checkpoint samples as its scheduler config says
unless the user overrides a field.

spacing is one of diffusers' names (leading, trailing, linspace) or a guided-diffusion respacing
string ("ddim50", "250", "10,20,30"; dg_jax.diffusion.respacing), which fixes the step count.
"""

from __future__ import annotations

import dataclasses

from dg_jax.configs import check_choices, option
from dg_jax.diffusion.respacing import is_respacing, respaced_steps
from dg_jax.diffusion.samplers import SamplingMethod
from dg_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    num_steps: int | None = option(
        None, "sampling steps (default: a respacing's count, else the model's, 50)",
        flag="steps", aliases=("num-inference-steps",))
    method: SamplingMethod = option(
        "ddim", "ddim, ddpm (ancestral), or dpm++2m (DPM-Solver++(2M), deterministic)",
        flag="sampler")
    eta: float = option(1.0, "DDIM noise (1: as the original code, better rates here; 0: "
                             "deterministic)")
    spacing: str | None = option(
        None, "timestep spacing: leading, trailing, linspace, or a guided-diffusion respacing "
              "such as ddim50, 250 or 10,20,30 (default: the model's)")
    steps_offset: int | None = option(
        None, "offset of leading timesteps, diffusers' steps_offset (default: the model's)")
    clip_sample: float | None = option(
        None, "clip x0_hat to [-c, c] each step; 0: off, as the paper (default: the model's; 1 "
              "for the embedded model)")
    set_alpha_to_one: bool | None = option(
        None, "the last step ends at alpha_bar = 1, else at alpha_bar[0] (default: the model's)")

    def __post_init__(self):
        check_choices(self)
        if not (self.spacing in (None, "leading", "trailing", "linspace")
                or is_respacing(self.spacing)):
            raise UserError(f"{{spacing}} {self.spacing!r} is unknown; use leading, trailing, "
                            "linspace or a guided-diffusion respacing (ddim50, 250, 10,20,30)")
        if self.num_steps is not None and self.num_steps < 1:
            raise UserError(f"{{num_steps}} must be positive, got {self.num_steps}")
        if (is_respacing(self.spacing) and self.num_steps is not None
                and self.num_steps != respaced_steps(self.spacing)):
            raise UserError(f"{{spacing}} {self.spacing!r} gives "
                            f"{respaced_steps(self.spacing)} steps, not {{num_steps}} "
                            f"{self.num_steps}")
        if self.eta < 0:
            raise UserError(f"{{eta}} must be >= 0, got {self.eta}")
        if self.clip_sample is not None and self.clip_sample < 0:
            raise UserError(f"{{clip_sample}} must be >= 0, got {self.clip_sample}")

    def resolve(self, defaults: SamplerConfig) -> SamplerConfig:
        """This config with every None field taken from `defaults` (a model's choices); the step
        count of a respacing string before the model's."""
        spacing = self.spacing or defaults.spacing
        if self.num_steps is None and is_respacing(spacing):
            self = dataclasses.replace(self, num_steps=respaced_steps(spacing))
        return dataclasses.replace(self, **{
            f.name: getattr(defaults, f.name) for f in dataclasses.fields(self)
            if getattr(self, f.name) is None})

    @property
    def clip_range(self) -> float | None:
        """The clip bound for the sampler functions: None when clipping is off."""
        return self.clip_sample or None


# What our own models (the embedded default) sample with unless told otherwise.
DEFAULT_SAMPLING = SamplerConfig(num_steps=50, spacing="trailing", steps_offset=0,
                                 clip_sample=1.0, set_alpha_to_one=True)
