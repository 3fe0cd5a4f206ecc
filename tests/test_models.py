"""The model families: shapes, masking, T=1, and that training actually learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.bilstm import BiLSTM, BiLSTMConfig
from models.cnn_lstm import CNNLSTM, CNNLSTMConfig
from models.common import BinEncoding, PiecewiseLinearEmbedding, encode_left_padded, fit_input_encoding

torch.set_num_threads(1)  # the test machine's cores are shared; these models are tiny

ARCHS = {
    "cnn_lstm": lambda f, t, k: CNNLSTM(CNNLSTMConfig(n_features=f, seq_len=t, n_types=k)),
    "bilstm": lambda f, t, k: BiLSTM(BiLSTMConfig(n_features=f, seq_len=t, n_types=k)),
    "cnn_lstm-bins": lambda f, t, k: CNNLSTM(CNNLSTMConfig(n_features=f, seq_len=t, n_types=k, input_bins=8)),
    "bilstm-bins": lambda f, t, k: BiLSTM(BiLSTMConfig(n_features=f, seq_len=t, n_types=k, input_bins=8)),
    "cnn_lstm-ple": lambda f, t, k: CNNLSTM(CNNLSTMConfig(n_features=f, seq_len=t, n_types=k, input_bins=8,
                                                          embed_width=16)),
}


def _left_padded_mask(lengths: list[int], t: int) -> torch.Tensor:
    mask = torch.zeros(len(lengths), t, dtype=torch.bool)
    for row, length in enumerate(lengths):
        mask[row, t - length:] = True
    return mask


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("t", [1, 2, 3, 8])
def test_output_shapes(arch, t):
    torch.manual_seed(0)
    model = ARCHS[arch](13, t, 15).eval()
    x = torch.randn(5, t, 13)  # (B, T, F)
    attack_logit, type_logits = model(x, torch.ones(5, t, dtype=torch.bool))
    assert attack_logit.shape == (5,)
    assert type_logits.shape == (5, 15)
    assert torch.isfinite(attack_logit).all() and torch.isfinite(type_logits).all()


def test_cnn_pooling_keeps_at_least_one_step():
    """ceil-mode pooling: T=1 stays 1, and the time lengths after the two blocks are ceil(ceil(T/2)/2)."""
    model = CNNLSTM(CNNLSTMConfig(n_features=4, seq_len=1, n_types=3)).eval()
    for t, expected in [(1, 1), (2, 1), (3, 1), (5, 2), (8, 2), (9, 3)]:
        x, m = torch.randn(2, 4, t), torch.ones(2, t)
        x, m = model.block1(x, m)
        x, m = model.block2(x, m)
        assert x.shape == (2, 64, expected) and m.shape == (2, expected), t


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_padding_values_do_not_change_the_output(arch):
    torch.manual_seed(1)
    t = 8
    model = ARCHS[arch](6, t, 4).eval()
    x = torch.randn(4, t, 6)
    mask = _left_padded_mask([8, 5, 1, 3], t)
    with torch.inference_mode():
        before = model(x, mask)
        noisy = x.clone()
        noisy[~mask] = torch.randn(int((~mask).sum()), 6) * 1000.0  # garbage in every padded row
        after = model(noisy, mask)
        assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
        # The same change to a real row must change that row's output: the mask is what protects padding.
        changed = x.clone()
        changed[1, 4] += 5.0  # row 1 has 5 real flows (positions 3..7); position 4 is real
        moved = model(changed, mask)
        assert not torch.equal(before[0][1], moved[0][1])
        assert torch.equal(before[0][0], moved[0][0])  # other rows untouched


def test_padding_is_skipped_by_the_lstm():
    """A one-flow sequence left-padded to T=4 scores like the same flow alone at T=1: padded steps never
    enter the LSTM. (Shown on the Bi-LSTM, whose encoder is the LSTM alone; the CNN's pooling windows align
    differently with and without padding, so its outputs agree only where the windows do.)
    """
    torch.manual_seed(2)
    model = ARCHS["bilstm"](6, 4, 3).eval()
    flow = torch.randn(3, 1, 6)
    padded = torch.cat([torch.randn(3, 3, 6), flow], dim=1)
    with torch.inference_mode():
        alone = model(flow, torch.ones(3, 1, dtype=torch.bool))
        in_padding = model(padded, _left_padded_mask([1, 1, 1], 4))
    torch.testing.assert_close(alone[0], in_padding[0])
    torch.testing.assert_close(alone[1], in_padding[1])


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_training_learns_a_synthetic_task(arch, cfg):
    from jobs.lib.config import load_config
    from jobs.train import fit, split_metrics

    train_cfg = load_config(["train.patience=100", "train.progress=false", "train.threads=1", "train.batch_size=128",
                             "train.max_minutes=1.0"], env={})
    from jobs.lib.synthetic import separable_split

    train, val = separable_split(768, 4, 6, seed=0), separable_split(512, 4, 6, seed=1)
    torch.manual_seed(0)
    model = ARCHS[arch](6, 4, 4)
    # The bin encoding spreads each feature over 8 channels: slower to fit on this tiny set, so it gets more
    # epochs and a lower bar for the type head (the base rate is 50% binary, 0.25 macro F1).
    binned = arch.endswith(("-bins", "-ple"))
    result = fit(model, train, val, train_cfg, torch.device("cpu"), max_epochs=40 if binned else 12)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    report = split_metrics(result.model, val, ["BENIGN", "a", "b", "c"], 0.5, torch.device("cpu"), 256)
    assert report["accuracy"] >= 0.98, report
    assert report["macro_f1"] >= (0.8 if binned else 0.95), report


def test_bin_encoding_values():
    """Bin i of a feature holds clamp((x - e_i) / (e_i+1 - e_i), 0, 1): hand-computed for edges [0, 1, 3]."""
    enc = BinEncoding(n_features=2, n_bins=2)
    enc.edges.copy_(torch.tensor([[0.0, 1.0, 3.0], [-1.0, 0.0, 1.0]]))
    x = torch.tensor([[[-5.0, -1.0]], [[0.5, 0.25]], [[2.0, 0.5]], [[7.0, 9.0]]])  # (B=4, T=1, F=2)
    got = enc(x)  # (4, 1, 4): feature 0's two bins, then feature 1's, each as 2t - 1
    t = torch.tensor([[[0.0, 0.0, 0.0, 0.0]], [[0.5, 0.0, 1.0, 0.25]], [[1.0, 0.5, 1.0, 0.5]],
                      [[1.0, 1.0, 1.0, 1.0]]])
    torch.testing.assert_close(got, 2.0 * t - 1.0)


def test_bin_encoding_fit_takes_quantiles_and_parks_spare_edges():
    enc = BinEncoding(n_features=3, n_bins=4)
    rows = np.stack([np.arange(9.0),  # quantiles 0, 2, 4, 6, 8
                     np.array([0.0] * 6 + [1.0] * 3),  # two distinct values: edges 0, 1 then spare
                     np.full(9, 7.0)], axis=1)  # constant: one edge then spare
    enc.fit(rows)
    np.testing.assert_array_equal(enc.edges.numpy(), [[0, 2, 4, 6, 8], [0, 1, 1e6, 2e6, 3e6],
                                                      [7, 1e6, 2e6, 3e6, 4e6]])
    # Exact values the z-score puts close together land in different bins once an edge lies between them.
    enc2 = BinEncoding(n_features=1, n_bins=2)
    enc2.fit(np.array([[0.5755], [0.5755], [0.5846], [0.5846]]))  # 29200 vs 28960 bytes, z-scored
    near = enc2(torch.tensor([[0.5755], [0.5846]]))
    torch.testing.assert_close(near, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="expected"):
        enc.fit(np.zeros((4, 2)))


def test_fit_input_encoding_uses_the_scored_flow_of_each_sequence():
    model = CNNLSTM(CNNLSTMConfig(n_features=1, seq_len=2, n_types=2, input_bins=2))
    features = np.array([[[100.0], [0.0]], [[-100.0], [1.0]], [[50.0], [2.0]]])  # (N=3, T=2, F=1)
    fit_input_encoding(model, features)
    np.testing.assert_array_equal(model.encode.edges.numpy(), [[0.0, 1.0, 2.0]])  # the padded/older steps ignored


def test_bin_encoding_fits_a_seeded_sample_of_a_large_split(monkeypatch):
    import models.common

    monkeypatch.setattr(models.common, "BIN_SAMPLE_ROWS", 5)
    rows = np.arange(1000.0).reshape(-1, 1)
    first, again, other = (BinEncoding(n_features=1, n_bins=4) for _ in range(3))
    first.fit(rows, seed=3)
    again.fit(rows, seed=3)
    other.fit(rows, seed=4)
    edges = first.edges.numpy()[0]
    assert torch.equal(first.edges, again.edges) and not torch.equal(first.edges, other.edges)
    assert set(edges) <= set(rows[:, 0]) and len(set(edges)) == 5  # 5 sampled rows: each one an edge, in order
    assert (np.diff(edges) > 0).all()


def test_piecewise_linear_embedding_is_the_bin_encoding_times_a_matrix():
    """The cumulative table gives what the dense form gives: every bin encoded, then (F * n, D) weights."""
    torch.manual_seed(0)
    embed = PiecewiseLinearEmbedding(5, 8, 4)
    rows = np.random.default_rng(0).normal(size=(1000, 5))
    rows[:, 4] = np.round(rows[:, 4])  # few distinct values: spare bins
    embed.fit(rows)
    x = torch.randn(3, 7, 5) * 2  # (B, T, F), values below the first and above the last edge too
    x[0, 0, 0] = float(embed.edges[0, 3])  # exactly on an edge
    dense = BinEncoding.forward(embed, x) @ embed.weight.reshape(40, 4) + embed.bias  # (B, T, D)
    torch.testing.assert_close(embed(x), dense, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # scoring keeps the tables until the weights change
        torch.testing.assert_close(embed(x), dense.detach(), atol=1e-5, rtol=1e-5)
        cached = embed.tables()[0]
        assert embed.tables()[0] is cached
    with torch.no_grad():
        embed.weight.mul_(2.0)
        assert embed.tables()[0] is not cached
        torch.testing.assert_close(embed(x) - embed.bias, 2.0 * (dense.detach() - embed.bias), atol=1e-5,
                                   rtol=1e-5)
    embed(x).sum().backward()
    assert embed.weight.grad is not None and embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bidirectional", [False, True])
def test_one_step_lstm_shortcut_matches_nn_lstm(bidirectional):
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(10, 7, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(5, 1, 10)
    _, (h_n, _) = lstm(x)
    expected = torch.cat(list(h_n[-(2 if bidirectional else 1):]), dim=-1)
    got = encode_left_padded(lstm, x, torch.ones(5, 1, dtype=torch.bool))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_one_step_convolution_shortcut_matches_the_convolution():
    torch.manual_seed(0)
    block = CNNLSTM(CNNLSTMConfig(n_features=6, seq_len=1, n_types=3)).block1
    x, mask = torch.randn(4, 6, 1), torch.ones(4, 1)  # (B, C, L=1)
    got, _ = block(x, mask)
    expected = torch.relu(block.conv(x))  # pooling one step keeps it
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
