"""The paper's hybrid CNN+LSTM flow classifier.

Input: (B, T, F) z-scored flow features, the T most recent flows of one grouping key, oldest first,
left-padded, with a mask (B, T) that is True for real flows; the scored flow is the last row. Output: an
attack logit (B,) and attack-type logits (B, K).

Layout, as the paper describes it: two 1-D convolutions (64 filters, ReLU), each followed by max pooling,
along the time axis with the F features as input channels; an LSTM over the pooled steps; dropout; dense
layers; two heads.

One addition to the paper, off with ``input_bins = 0``: each feature can first be spread over quantile bins
(:class:`models.common.BinEncoding`, F -> F * input_bins channels), which lets the network tell apart exact
values that the z-score puts close together; with ``embed_width > 0`` the bins are mapped straight to
embed_width channels (:class:`models.common.PiecewiseLinearEmbedding`), which costs O(F * embed_width) per flow
instead of a convolution over F * input_bins channels (models/COMPARISON.md measures both).

T=1 (per-flow scoring) works without a special case: the convolutions use "same" padding, and pooling uses
``ceil_mode=True`` so a length L becomes ceil(L / 2), never 0 (1 -> 1, 2 -> 1, 3 -> 2, 8 -> 4). With T=1 the
convolutions see one step (their centre taps only) and the model is a per-flow network.

Masking: padded rows are zeroed before the first convolution and the mask zeroes padded steps again after
each convolution, so a padded step is indistinguishable from the convolutions' own zero padding; the LSTM
then runs over the valid pooled steps only (see :func:`models.common.encode_left_padded`). Changing the
values of padded rows therefore cannot change the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.common import Heads, encode_left_padded, input_encoding


@dataclass
class CNNLSTMConfig:
    n_features: int  # F
    seq_len: int  # T
    n_types: int  # K, attack types including BENIGN at index 0
    conv_channels: int = 64  # the paper's 64 filters, both layers
    kernel_size: int = 3
    pool_size: int = 2
    lstm_hidden: int = 64
    lstm_layers: int = 1
    dense: int = 64
    dropout: float = 0.3
    input_bins: int = 0  # > 0: piecewise-linear encoding of each feature over quantile bins; 0: plain z-scores
    embed_width: int = 0  # > 0 (with input_bins): the encoding mapped to this many values per flow, cheaply

    def __post_init__(self) -> None:
        if min(self.n_features, self.seq_len, self.n_types, self.conv_channels, self.lstm_hidden) < 1:
            raise ValueError(f"CNNLSTMConfig: sizes must be >= 1, got {self}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"CNNLSTMConfig: kernel_size must be odd for 'same' padding, got "
                             f"{self.kernel_size}")


class ConvBlock(nn.Module):
    """Conv1d (same length) -> ReLU -> MaxPool1d (ceil mode), with the mask pooled alongside."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, pool_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.pool = nn.MaxPool1d(pool_size, pool_size, ceil_mode=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x (B, C, L), mask (B, L) float
        # Zero the padded steps before pooling: ReLU outputs are >= 0, so a zero never wins a max over a real
        # step, and a window of padding pools to exactly zero.
        if x.shape[-1] == 1:
            # One step (T=1): with "same" padding every tap but the centre one multiplies zero padding, so
            # the convolution is a linear map by the centre tap; a third of the work, the same result.
            centre = self.conv.weight[:, :, self.conv.kernel_size[0] // 2]  # (C', C)
            y = F.linear(x.squeeze(-1), centre, self.conv.bias).unsqueeze(-1)  # (B, C', 1)
        else:
            y = self.conv(x)  # (B, C', L)
        x = F.relu(y) * mask.unsqueeze(1)  # (B, C', L)
        if x.shape[-1] == 1:
            return x, mask  # ceil-mode pooling of one step is that step
        x = self.pool(x)  # (B, C', ceil(L / pool))
        # A pooled step is real if any step it covers is real; with left padding this keeps the mask a suffix
        # and the last pooled step always holds the scored flow.
        mask = self.pool(mask.unsqueeze(1)).squeeze(1)  # (B, ceil(L / pool))
        return x, mask


class CNNLSTM(nn.Module):
    def __init__(self, config: CNNLSTMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encode, c_in = input_encoding(c.n_features, c.input_bins, c.embed_width)  # E = c_in channels
        self.block1 = ConvBlock(c_in, c.conv_channels, c.kernel_size, c.pool_size)
        self.block2 = ConvBlock(c.conv_channels, c.conv_channels, c.kernel_size, c.pool_size)
        self.lstm = nn.LSTM(c.conv_channels, c.lstm_hidden, num_layers=c.lstm_layers, batch_first=True,
                            dropout=c.dropout if c.lstm_layers > 1 else 0.0)
        self.heads = Heads(c.lstm_hidden, c.dense, c.n_types, c.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x (B, T, F), mask (B, T) bool
        m = mask.to(x.dtype)  # (B, T)
        x = self.encode(x)  # (B, T, E)
        x = (x * m.unsqueeze(-1)).transpose(1, 2)  # (B, E, T): features are the conv's channels
        x, m = self.block1(x, m)  # (B, C, T1), (B, T1) with T1 = ceil(T / pool)
        x, m = self.block2(x, m)  # (B, C, T2), (B, T2)
        h = encode_left_padded(self.lstm, x.transpose(1, 2), m > 0)  # (B, H)
        return self.heads(h)  # (B,), (B, K)
