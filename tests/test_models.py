import warnings

import pytest
import torch

from forecaster.models import QuantileRNN, pinball_loss

Q = [0.1, 0.5, 0.9]


def net(cell="lstm", strategy="direct", horizon=4, quantiles=Q, emb=3, dropout=0.0, layers=2, ar=0):
    torch.manual_seed(0)
    return QuantileRNN(
        cell=cell,
        n_features=6,
        n_tickers=3,
        hidden_size=8,
        num_layers=layers,
        dropout=dropout,
        embedding_dim=emb,
        horizon=horizon,
        quantiles=quantiles,
        strategy=strategy,
        ar_order=ar,
        ar_feature=2 if ar else None,
    )


@pytest.mark.parametrize("cell, module", [("rnn", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)])
@pytest.mark.parametrize("strategy, steps", [("direct", 4), ("recursive", 1)])
def test_shapes_and_fused_encoders(cell, module, strategy, steps):
    m = net(cell, strategy)
    assert type(m.encoder) is module
    out = m(torch.randn(5, 12, 6), torch.tensor([0, 1, 2, 0, 1]))
    assert out.shape == (5, steps, 3)


def test_quantiles_never_cross():
    m = net(quantiles=[0.05, 0.1, 0.5, 0.9, 0.95])
    with torch.no_grad():
        for p in m.head.parameters():
            p.normal_(0, 5)  # wild weights
        out = m(torch.randn(64, 10, 6) * 10, torch.randint(0, 3, (64,)))
    assert (out.diff(dim=-1) >= 0).all()


def test_ticker_embedding_changes_the_forecast():
    m = net()
    x = torch.randn(1, 10, 6)
    a, b = m(x, torch.tensor([0])), m(x, torch.tensor([1]))
    assert not torch.allclose(a, b)
    no_emb = net(emb=0)
    assert no_emb.embedding is None
    assert no_emb(x, torch.tensor([2])).shape == (1, 4, 3)


def test_pinball_loss_values():
    pred = torch.tensor([[[0.0, 1.0, 2.0]]])
    y = torch.tensor([[1.5]])
    # levels 0.1, 0.5, 0.9: 0.1*1.5, 0.5*0.5, (0.9-1)*(-0.5) = 0.15, 0.25, 0.05
    assert float(pinball_loss(pred, y, Q)) == pytest.approx((0.15 + 0.25 + 0.05) / 3)
    assert float(pinball_loss(y.unsqueeze(-1).expand(1, 1, 3), y, Q)) == 0.0


def test_pinball_minimiser_is_the_quantile():
    torch.manual_seed(1)
    y = torch.randn(4_000, 1)
    q = torch.zeros(1, 1, 3, requires_grad=True)
    opt = torch.optim.Adam([q], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        pinball_loss(q.expand(len(y), 1, 3), y, Q).backward()
        opt.step()
    expected = torch.quantile(y, torch.tensor(Q))
    assert torch.allclose(q.detach().flatten(), expected, atol=0.08)


def test_one_layer_with_dropout_builds_without_a_warning():
    """The default network (one layer, dropout 0.1) drops out after the encoder only: torch's
    encoder would warn on every training if it were given the dropout between layers too."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = net(layers=1, dropout=0.1)
    assert m.encoder.dropout == 0.0 and m.dropout.p == 0.1


def test_the_autoregressive_term_starts_as_no_term_at_all():
    """A new network with the highway forecasts what the same network without it forecasts:
    the term starts at zero, so only the data can make it matter."""
    x, tid = torch.randn(4, 10, 6), torch.tensor([0, 1, 2, 0])
    plain = net(ar=0)
    highway = net(ar=3)
    with torch.no_grad():
        torch.testing.assert_close(highway.eval()(x, tid), plain.eval()(x, tid), rtol=0, atol=0)


def test_dropout_applies_in_training_only():
    """One layer: the dropout after the encoder draws a new mask each training pass, and is
    off in eval mode (forecasts are deterministic)."""
    m = net(layers=1, dropout=0.5)
    x, tid = torch.randn(8, 10, 6), torch.randint(0, 3, (8,))
    with torch.no_grad():
        m.train()
        assert not torch.equal(m(x, tid), m(x, tid))
        m.eval()
        assert torch.equal(m(x, tid), m(x, tid))


def test_build_model_takes_the_configured_dropout():
    from forecaster.config import load_config
    from forecaster.models import build_model

    cfg = load_config(None, {"model.dropout": 0.3, "model.num_layers": 2, "model.ar_order": 0})
    m = build_model(cfg, n_features=6, n_tickers=2, features=None)
    assert m.dropout.p == 0.3 and m.encoder.dropout == 0.3
