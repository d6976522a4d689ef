"""Stochastic weight averaging (Izmailov et al. 2018): ``--swa-epochs N`` runs the last N epochs at a constant
``--swa-lr`` and ships the equal-weight mean of the weights SGD reaches at the end of each of them.

The mean lies in a flatter part of the loss surface than any one of them, which generalises better. Its
BatchNorm statistics belong to none of the averaged nets, so they are measured again on the training images
before it is evaluated or saved.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from ..preprocess import PreprocessSpec
from .data import InMemorySplit, to_input


class WeightAverage:
    """The running mean of a net's weights, one sample per averaged epoch."""

    def __init__(self, model: nn.Module) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.count = 0  # epochs averaged so far

    @torch.no_grad()
    def add(self, model: nn.Module) -> None:
        for mean, current in zip(self.model.parameters(), model.parameters()):
            mean.lerp_(current.detach().to(mean.dtype), 1.0 / (self.count + 1))  # mean += (current - mean) / n
        self.count += 1

    def restore(self, state: dict) -> None:
        """Resume from a checkpoint (see ``checkpoint.save_checkpoint``): one written inside the averaging
        epochs holds the average as "model" (the net SGD moves is "trained_model"); an earlier one none yet."""
        if "trained_model" in state:
            self.model.load_state_dict(state["model"])
            self.count = int(state["averaged_epochs"])

    @torch.no_grad()
    def measure_batchnorm(self, split: InMemorySplit, augment: Callable[[torch.Tensor], torch.Tensor],
                          spec: PreprocessSpec, device: torch.device, use_bf16: bool, batch_size: int,
                          generator: torch.Generator, rank: int = 0, world: int = 1) -> None:
        """Running mean/var of every BN layer, averaged over one pass of training batches shuffled and augmented
        as in training: the statistics the weights were trained under. (Clean images give other statistics;
        unshuffled batches, one class each since a split is stored class by class, miss the variance between
        classes: both cost validation accuracy.) Under torchrun each rank measures every world-th batch of the
        same order (``generator`` is seeded alike on every rank) and the ranks' means are averaged: the same
        statistics, 1/world of the work."""
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # None: a cumulative average over all batches, not an exponential one
        self.model.train()
        order = torch.randperm(len(split), generator=generator)
        starts = range(0, len(split) - batch_size + 1, batch_size)
        starts = starts[: len(starts) - len(starts) % world]  # as many batches on every rank: their means weigh equally
        for start in starts[rank::world]:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                self.model(to_input(augment(split.images[order[start : start + batch_size]]), spec, device))
        for norm in norms:
            if world > 1:
                for statistic in (norm.running_mean, norm.running_var):
                    dist.all_reduce(statistic)
                    statistic /= world
            norm.momentum = 0.1
        self.model.eval()
