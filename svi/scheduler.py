"""Flow matching with a sigma shift: the maths only (SVI_SPEC 1.9, 3.4, 3.5). No models here.

Convention: sigma = 1 is pure noise, sigma = 0 is data; x_t = (1 - sigma) x0 + sigma eps and the
model predicts the velocity v = eps - x0. The DiT sees t = 1000 sigma.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

NUM_TRAIN_TIMESTEPS = 1000


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
