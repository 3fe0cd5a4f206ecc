"""The Bi-LSTM baseline: a bidirectional LSTM over the flow sequence, dropout, dense layers, the same two
heads.

Input (B, T, F) with mask (B, T) as for :mod:`models.cnn_lstm`; padded steps never enter the LSTM, so their
values cannot change the output. T=1 needs no special case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.common import Heads, encode_left_padded, input_encoding


@dataclass
class BiLSTMConfig:
    n_features: int  # F
    seq_len: int  # T
    n_types: int  # K, attack types including BENIGN at index 0
    lstm_hidden: int = 64  # per direction
    lstm_layers: int = 1
    dense: int = 64
    dropout: float = 0.3
    input_bins: int = 0  # > 0: bin encoding of each feature before the LSTM (as in models.cnn_lstm)
    embed_width: int = 0  # > 0 (with input_bins): mapped to this many values per flow (as in models.cnn_lstm)

    def __post_init__(self) -> None:
        if min(self.n_features, self.seq_len, self.n_types, self.lstm_hidden, self.lstm_layers) < 1:
            raise ValueError(f"BiLSTMConfig: sizes must be >= 1, got {self}")


class BiLSTM(nn.Module):
    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encode, c_in = input_encoding(c.n_features, c.input_bins, c.embed_width)  # E = c_in values
        self.lstm = nn.LSTM(c_in, c.lstm_hidden, num_layers=c.lstm_layers, batch_first=True,
                            bidirectional=True, dropout=c.dropout if c.lstm_layers > 1 else 0.0)
        self.heads = Heads(2 * c.lstm_hidden, c.dense, c.n_types, c.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x (B, T, F), mask (B, T) bool
        x = self.encode(x)  # (B, T, E)
        h = encode_left_padded(self.lstm, x, mask)  # (B, 2H): last forward state and last backward state
        return self.heads(h)  # (B,), (B, K)
