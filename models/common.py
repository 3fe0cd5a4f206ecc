"""Pieces both model families share: the two output heads and masked LSTM encoding of left-padded sequences.

Shape letters: B batch, T timesteps (flows per sequence), F features per flow, C channels, H hidden units,
K attack types (index 0 is BENIGN).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class Heads(nn.Module):
    """Dense layers on the sequence encoding, then two heads: attack probability (binary) and attack type."""

    def __init__(self, d_in: int, d_dense: int, n_types: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, d_dense), nn.ReLU(),
                                   nn.Dropout(dropout))
        self.attack = nn.Linear(d_dense, 1)
        self.attack_type = nn.Linear(d_dense, n_types)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.dense(h)  # (B, D)
        return self.attack(z).squeeze(-1), self.attack_type(z)  # (B,) logits, (B, K) logits


def encode_left_padded(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run `lstm` over the valid (unmasked) steps of left-padded sequences only; return the final states.

    x (B, T, C), mask (B, T) with the valid steps a suffix of each row (left padding: the scored flow last).
    Returns (B, H * directions): the final hidden state of each direction. Padded steps never enter the LSTM,
    so their values cannot change the encoding and a sequence's encoding does not depend on how much padding
    it carries.
    """
    B, T, C = x.shape
    lengths = mask.sum(dim=1).clamp(min=1)  # (B,)
    if T == 1 or bool(mask.all()):
        # Fast path (T=1, or every key has a full history): nothing to skip, no packing overhead.
        _, (h_n, _) = lstm(x)
    else:
        # pack_padded_sequence wants valid steps first: rotate each row left by its padding length.
        shift = (T - lengths).unsqueeze(1)  # (B, 1)
        index = (torch.arange(T, device=x.device).unsqueeze(0) + shift) % T  # (B, T)
        x = x.gather(1, index.unsqueeze(-1).expand(B, T, C))  # (B, T, C), valid steps at the front
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = lstm(packed)
    # h_n (layers * directions, B, H): keep the top layer's directions.
    directions = 2 if lstm.bidirectional else 1
    return torch.cat(list(h_n[-directions:]), dim=-1)  # (B, H * directions)
