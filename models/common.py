"""Pieces both model families share: the input bin encoding, the two output heads and masked LSTM encoding of
left-padded sequences.

Shape letters: B batch, T timesteps (flows per sequence), F features per flow, C channels, H hidden units,
K attack types (index 0 is BENIGN).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

# Rows of the training split the bin edges are taken from (a seeded sample beyond that: quantiles of 200k rows
# are as good as of millions, and a disk-backed split is not read whole).
BIN_SAMPLE_ROWS = 200_000


class BinEncoding(nn.Module):
    """Piecewise-linear encoding of each z-scored feature over quantile bins of the training split.

    Feature f with edges e_0 < ... < e_n becomes n values: bin i holds 2 t_i - 1 with
    t_i = clamp((x - e_i) / (e_i+1 - e_i), 0, 1) (centred on 0, which trains faster than [0, 1]), so a flow
    reads as "how far past each quantile" (Gorishniy et al., "On Embeddings for Numerical Features in
    Tabular Deep Learning", 2022). Why: CICFlowMeter features carry exact values that matter (TCP initial window
    sizes 28960 vs 29200, packet sizes); after the log and z-score they lie 0.01 apart, too close for a
    network to tell apart, while a quantile edge between them makes them one bin apart. The edges are buffers:
    :meth:`fit` sets them from the training split and they travel in the weights file.

    A feature with fewer distinct quantiles than bins gets its spare edges far above any clipped z-score, so
    its spare bins are always -1. Before :meth:`fit` the edges are an even grid over [-3, 3].
    """

    edges: torch.Tensor  # a buffer (register_buffer): (F, n_bins + 1)

    def __init__(self, n_features: int, n_bins: int) -> None:
        super().__init__()
        self.n_bins = n_bins
        grid = torch.linspace(-3.0, 3.0, n_bins + 1)
        self.register_buffer("edges", grid.repeat(n_features, 1))  # (F, n_bins + 1)

    def fit(self, x: np.ndarray, seed: int = 0) -> None:
        """Edges from (N, F) z-scored training rows: the distinct quantiles 0, 1/n, ..., 1 of each feature."""
        if len(x) > BIN_SAMPLE_ROWS:
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), BIN_SAMPLE_ROWS, replace=False))]
        rows = np.asarray(x, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.edges.shape[0] or len(rows) == 0:
            raise ValueError(f"BinEncoding.fit: expected (N>0, {self.edges.shape[0]}) rows, got {rows.shape}")
        levels = np.linspace(0.0, 1.0, self.n_bins + 1)
        edges = np.empty(tuple(self.edges.shape))
        for f in range(rows.shape[1]):
            q = np.unique(np.quantile(rows[:, f], levels))
            spare = self.n_bins + 1 - len(q)
            edges[f] = np.concatenate([q, 1e6 * np.arange(1, spare + 1)])  # spare bins: never reached
        self.edges.copy_(torch.from_numpy(edges))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (..., F) -> (..., F * n_bins)
        lo, hi = self.edges[:, :-1], self.edges[:, 1:]  # (F, n_bins)
        width = (hi - lo).clamp(min=1e-6)
        t = ((x.unsqueeze(-1) - lo) / width).clamp(0.0, 1.0)  # (..., F, n_bins)
        return (2.0 * t - 1.0).flatten(-2)


class PiecewiseLinearEmbedding(BinEncoding):
    """:class:`BinEncoding` followed by a linear map to `width` values, computed in O(F * width) per flow.

    The dense form multiplies all F * n_bins encoded values by an (F * n_bins, width) matrix. But a value in
    bin k has every bin below k full (+1), bin k partly filled (2 t - 1) and every bin above empty (-1), so the
    product for feature f is ``A[f, k] + t * B[f, k]`` with A a cumulative sum over the bins of the weights and
    B = 2 W[f, k]: one table row per feature instead of n_bins. :func:`torch.nn.functional.embedding_bag` sums
    those rows over the features in one kernel, without an (N, F, width) intermediate. Training sees the same
    function (the table is built from W on each forward, so the gradient reaches W as in the dense form).
    """

    def __init__(self, n_features: int, n_bins: int, width: int) -> None:
        super().__init__(n_features, n_bins)
        self.width = width
        self.weight = nn.Parameter(torch.empty(n_features, n_bins, width))  # (F, n_bins, D)
        self.bias = nn.Parameter(torch.zeros(width))
        nn.init.normal_(self.weight, std=1.0 / float(np.sqrt(n_features * n_bins)))

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(F * n_bins, D) each: A[f, k], the constant part, and B[f, k] = 2 W[f, k], the slope.

        Rebuilt from W on every forward while gradients are on; under no_grad / inference_mode they are kept
        until W changes (its version counter), so scoring does not rebuild them per batch."""
        version = self.weight._version
        cached = getattr(self, "_tables", None)
        if not torch.is_grad_enabled() and cached is not None and cached[0] == version:
            return cached[1], cached[2]
        w = self.weight  # (F, n, D)
        below = torch.cumsum(w, dim=1) - w  # sum over bins i < k
        a = (2.0 * below - w.sum(dim=1, keepdim=True)).flatten(0, 1)  # bins < k: +W, k: -W + 2tW, > k: -W
        b = (2.0 * w).flatten(0, 1)
        if not torch.is_grad_enabled():
            self._tables = (version, a, b)
        return a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (..., F) -> (..., D)
        lead, n_features = x.shape[:-1], x.shape[-1]
        flat = x.reshape(-1, n_features).transpose(0, 1).contiguous()  # (F, N)
        inner = self.edges[:, 1:-1].contiguous()  # (F, n - 1)
        k = torch.searchsorted(inner, flat, right=True)  # (F, N): bin of each value, 0 .. n - 1
        lo = self.edges.gather(1, k)
        hi = self.edges.gather(1, k + 1)
        t = ((flat - lo) / (hi - lo).clamp(min=1e-6)).clamp(0.0, 1.0)  # (F, N)
        offset = (torch.arange(n_features, device=x.device) * self.n_bins).unsqueeze(1)  # (F, 1)
        rows = (k + offset).transpose(0, 1).contiguous()  # (N, F)
        a, b = self.tables()
        out = F.embedding_bag(rows, a, mode="sum")  # (N, D): sum over f of A[f, k_f]
        out = out + F.embedding_bag(rows, b, mode="sum",
                                    per_sample_weights=t.transpose(0, 1).contiguous().to(b.dtype))
        return (out + self.bias).reshape(*lead, self.width)


def input_encoding(n_features: int, input_bins: int, embed_width: int) -> tuple[nn.Module, int]:
    """The module in front of the first layer and the values per flow it yields.

    input_bins = 0: the z-scores as they are (F). input_bins > 0 and embed_width = 0: every bin a channel
    (F * input_bins). Both > 0: :class:`PiecewiseLinearEmbedding` to embed_width values.
    """
    if input_bins <= 0:
        return nn.Identity(), n_features
    if embed_width <= 0:
        return BinEncoding(n_features, input_bins), n_features * input_bins
    return PiecewiseLinearEmbedding(n_features, input_bins, embed_width), embed_width


def fit_input_encoding(model: nn.Module, features: np.ndarray, seed: int = 0) -> None:
    """Fit every :class:`BinEncoding` of `model` on the flows of a training split, features (N, T, F).

    Only the last step of each sequence is used: it is the scored flow, always real, and every flow is the last
    step of its own sequence, so each counts once whatever T is.
    """
    for module in model.modules():
        if isinstance(module, BinEncoding):
            module.fit(features[:, -1, :], seed)


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


def _one_step(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """A one-layer LSTM's final state after one step from zero state, x (B, C) -> (B, H * directions).

    With h0 = c0 = 0 the recurrent product W_hh h0 is zero and the forget gate multiplies c0 = 0, so one step is
    ``c = sigmoid(i) tanh(g)``, ``h = sigmoid(o) tanh(c)`` on ``W_ih x + b_ih + b_hh``: the same numbers as
    nn.LSTM without the H x 4H recurrent matrix product, two thirds of the LSTM's work at H = 2C.
    """
    states = []
    for suffix in ("", "_reverse")[: 2 if lstm.bidirectional else 1]:
        w_ih = getattr(lstm, f"weight_ih_l0{suffix}")  # (4H, C)
        bias = getattr(lstm, f"bias_ih_l0{suffix}") + getattr(lstm, f"bias_hh_l0{suffix}") if lstm.bias else None
        i, _, g, o = F.linear(x, w_ih, bias).chunk(4, dim=-1)  # PyTorch's gate order: i, f, g, o
        states.append(torch.sigmoid(o) * torch.tanh(torch.sigmoid(i) * torch.tanh(g)))  # (B, H)
    return torch.cat(states, dim=-1)  # (B, H * directions)


def encode_left_padded(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run `lstm` over the valid (unmasked) steps of left-padded sequences only; return the final states.

    x (B, T, C), mask (B, T) with the valid steps a suffix of each row (left padding: the scored flow last).
    Returns (B, H * directions): the final hidden state of each direction. Padded steps never enter the LSTM,
    so their values cannot change the encoding and a sequence's encoding does not depend on how much padding
    it carries.
    """
    B, T, C = x.shape
    lengths = mask.sum(dim=1).clamp(min=1)  # (B,)
    if T == 1 and lstm.num_layers == 1 and lstm.proj_size == 0:
        return _one_step(lstm, x[:, 0])
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
