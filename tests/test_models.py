import pytest
import torch

from forecaster.models import QuantileRNN, pinball_loss

Q = [0.1, 0.5, 0.9]


def net(cell="lstm", strategy="direct", horizon=4, quantiles=Q, emb=3, dropout=0.0):
    torch.manual_seed(0)
    return QuantileRNN(
        cell=cell,
        n_features=6,
        n_tickers=3,
        hidden_size=8,
        num_layers=2,
        dropout=dropout,
        embedding_dim=emb,
        horizon=horizon,
        quantiles=quantiles,
        strategy=strategy,
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
