"""Against the live Yahoo service. Deselected by default (pytest's `-m 'not network'` in
pyproject.toml); run with `make test-all` or `pytest -m network` on a machine with internet."""

import pandas as pd
import pytest

from forecaster.store import download, load_store

pytestmark = pytest.mark.network


def test_live_download_of_two_tickers_and_an_incremental_update(tmp_path):
    rep = download(["AAPL", "^GSPC"], tmp_path)
    assert rep.failed == {}
    for sym in ("AAPL", "^GSPC"):
        bars = load_store(tmp_path, sym)
        assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
        assert len(bars) > 1000 and bars.index.is_monotonic_increasing
        assert bars.index[-1] >= pd.Timestamp.now().normalize() - pd.Timedelta(days=10)
    again = download(["AAPL"], tmp_path)
    assert again.ok["AAPL"].added <= 5  # only the few missing sessions, not the whole history


def test_live_unknown_symbol_is_reported_not_raised(tmp_path):
    rep = download(["ZZZZNOTATICKER1"], tmp_path)
    assert "ZZZZNOTATICKER1" in rep.failed
    assert rep.kinds["ZZZZNOTATICKER1"] in {"no_data", "network"}
