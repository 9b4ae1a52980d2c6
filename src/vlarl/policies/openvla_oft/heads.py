"""OpenVLA-OFT's L1-regression action head (continuous actions), with OFT's module and parameter names so that
its released ``action_head--<step>_checkpoint.pt`` files load as they are."""

from __future__ import annotations

import torch
from torch import nn


class MLPResNetBlock(nn.Module):
    """``x + ReLU(Linear(LayerNorm(x)))`` (pre-norm residual block; parameters ``ffn.0``, ``ffn.1``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm, Linear, ReLU, ``blocks`` residual blocks, LayerNorm, Linear."""

    def __init__(self, blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1Head(nn.Module):
    """The A slot states of each action ``[B, K, A * D]`` -> that action, normalised ``[B, K, A]``
    (OFT's ``L1RegressionActionHead``: 2 blocks, hidden size D)."""

    def __init__(self, hidden: int, action_dim: int, blocks: int = 2):
        super().__init__()
        self.model = MLPResNet(blocks, hidden * action_dim, hidden, action_dim)

    def forward(self, slot_hidden: torch.Tensor, chunk_len: int) -> torch.Tensor:
        """``slot_hidden [B, K * A, D]`` -> ``[B, K, A]``."""
        return self.model(slot_hidden.float().reshape(slot_hidden.shape[0], chunk_len, -1))
