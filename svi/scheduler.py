"""Flow matching with a sigma shift: the maths only (SVI_SPEC 1.9, 3.4, 3.5). No models here.

Convention: sigma = 1 is pure noise, sigma = 0 is data; x_t = (1 - sigma) x0 + sigma eps and the
sampler integrates the velocity v = eps - x0. The DiT sees t = 1000 sigma. Wan predicts v directly
("flow"); a model may instead predict the clean sample x0 ("sample", as JiT, Li & He 2025), which a
narrow DiT can do where it cannot carry per-value noise through its residual stream, and
`as_velocity` turns that into the v the sampler and the error-recycling maths use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NUM_TRAIN_TIMESTEPS = 1000
PREDICTIONS = ("flow", "sample")
# v = (x_t - x0) / sigma would weight an x0 error by 1 / sigma^2 near sigma = 0 (the training grid
# reaches 0.005) and let those steps swamp the loss; below the floor the divisor stays at the floor,
# in training and sampling alike (inference sigmas stay above it: 0.09 at 50 steps, shift 5).
SAMPLE_SIGMA_FLOOR = 0.05


def shift_sigma(sigma: torch.Tensor | float, shift: float):
    """sigma' = s sigma / (1 + (s - 1) sigma): spends more steps at high noise for larger s."""
    return shift * sigma / (1 + (shift - 1) * sigma)


@dataclass(frozen=True)
class FlowMatchScheduler:
    shift: float = 5.0
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS

    def sigmas(self, steps: int) -> torch.Tensor:
        """(steps + 1,) float64 sigmas from 1 down to 0 inclusive; sigma_i = shift(1 - i/steps)."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        base = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return shift_sigma(base, self.shift)

    def timesteps(self, steps: int) -> torch.Tensor:
        """(steps,) the t = 1000 sigma fed to the DiT at each inference step (sigma_N = 0 is not run)."""
        return self.sigmas(steps)[:-1] * self.num_train_timesteps

    @staticmethod
    def step(velocity: torch.Tensor, sample: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
        """One Euler step x <- x + v (sigma_next - sigma), computed in fp32 and cast back."""
        out = sample.float() + velocity.float() * (sigma_next - sigma)
        return out.to(sample.dtype)

    @staticmethod
    def as_velocity(output: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor | float,
                    prediction: str = "flow") -> torch.Tensor:
        """The velocity a model's `output` stands for: itself for a "flow" model, and for a "sample"
        model (x0 predicted) v = (x_t - x0) / max(sigma, SAMPLE_SIGMA_FLOOR), in fp32."""
        if prediction == "flow":
            return output
        if prediction != "sample":
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x_t.device).clamp(min=SAMPLE_SIGMA_FLOOR)
        return (x_t.float() - output.float()) / sigma

    # ---------------------------------------------------------------- training-side helpers
    def training_sigmas(self) -> torch.Tensor:
        """(1000,) sigmas of the training grid: the inference formula at N = 1000, without the final 0."""
        return self.sigmas(self.num_train_timesteps)[:-1]

    @staticmethod
    def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return (1 - sigma) * x0 + sigma * noise

    @staticmethod
    def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise - x0

    @staticmethod
    def integrate_to_noise(x_t: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """One Euler step from sigma straight to sigma = 1: x_1 = x_t + (1 - sigma) v."""
        return x_t + (1 - sigma) * velocity

    @staticmethod
    def integrate_to_data(x_t: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """One Euler step from sigma straight to sigma = 0: x_0 = x_t - sigma v."""
        return x_t - sigma * velocity

    def training_weights(self) -> torch.Tensor:
        """(1000,) loss weight per training index: a Gaussian bump in t around 500, mean 1 (SVI_SPEC 3.4)."""
        t = self.training_sigmas() * self.num_train_timesteps
        y = torch.exp(-2 * ((t - self.num_train_timesteps / 2) / self.num_train_timesteps) ** 2)
        y = y - y.min()
        return y * self.num_train_timesteps / y.sum()

    def nearest_grid(self, t: torch.Tensor | float, inference_steps: int = 50) -> torch.Tensor:
        """Index of the inference timestep nearest to training timestep(s) t: the error-bank grid."""
        grid = self.timesteps(inference_steps)
        t = torch.as_tensor(t, dtype=torch.float64)
        return (t[..., None] - grid).abs().argmin(dim=-1)
