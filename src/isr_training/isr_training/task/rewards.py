"""Reward terms of the ISR task: each a pure function of the step's quantities, ``(W, D)`` float.

The reward is ``sum(weight[name] * term[name])`` (weights in :class:`RewardWeights`); every term's
episode sum is reported separately. Each function's docstring says what one unit of it means.
"""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import Tensor

from .config import RewardWeights

REWARD_TERMS: tuple[str, ...] = tuple(f.name for f in fields(RewardWeights))
"""Names of the reward terms, in a fixed order."""


def new_target_term(found_new: Tensor) -> Tensor:
    """Number of targets this drone detected for the first time this step (``(W, D, T)`` bool)."""
    return found_new.sum(-1).float()


def coverage_term(seen_new: Tensor) -> Tensor:
    """Number of coverage cells this drone saw for the first time (``(W, D, G*G)`` bool)."""
    return seen_new.sum(-1).float()


def time_term(like: Tensor) -> Tensor:
    """One per control step."""
    return torch.ones_like(like, dtype=torch.float32)


def collision_term(crashed: Tensor) -> Tensor:
    """One when the drone crashed this step."""
    return crashed.float()


def geofence_term(breached: Tensor) -> Tensor:
    """One when the drone is outside the geofence this step."""
    return breached.float()


def altitude_band_term(
    altitude_m: Tensor, band_m: tuple[float, float], cap_m: float = 10.0
) -> Tensor:
    """Metres outside the preferred altitude band (0 inside), capped at ``cap_m``."""
    lo, hi = band_m
    outside = torch.clamp(lo - altitude_m, min=0.0) + torch.clamp(altitude_m - hi, min=0.0)
    return outside.clamp(max=cap_m)


def action_smoothness_term(action: Tensor, prev_action: Tensor) -> Tensor:
    """Squared norm of the change of the normalized action (``(W, D, 4)``)."""
    return ((action - prev_action) ** 2).sum(-1)


def lead_approach_term(prev_dist_m: Tensor, dist_m: Tensor, same_lead: Tensor) -> Tensor:
    """Metres the drone came closer to identifying its nearest remembered lead.

    ``dist_m``: the lead's 3D distance beyond its class's recognition range (0 within it), now
    and at the previous step. Negative when the drone moved away; 0 where the nearest lead
    changed or there is none (``same_lead`` False).
    """
    return torch.where(same_lead, prev_dist_m - dist_m, torch.zeros_like(dist_m))


def weighted_sum(terms: dict[str, Tensor], weights: RewardWeights) -> Tensor:
    """The reward: ``sum(weight * term)`` over :data:`REWARD_TERMS`."""
    total = None
    for name in REWARD_TERMS:
        part = terms[name] * getattr(weights, name)
        total = part if total is None else total + part
    return total
