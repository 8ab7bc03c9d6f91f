"""Offline stand-ins for Yahoo Finance, so tests run the real yfinance code with no network.

``FakeYahoo`` builds a ``requests.Session`` whose transport adapter answers yfinance's
requests (chart, cookie, crumb, quoteSummary) from memory:

    yahoo = FakeYahoo({"AAA": make_bars("2024-01-02", 30), "RL": 429})  # make_bars: support.py
    sources.fetch_history("AAA", session=yahoo.session())

A value is either a frame of daily bars (served as a v8 chart payload, filtered by the
request's period1/period2 like Yahoo does), an int HTTP status (429, 404, 500...) or a str,
a body answered with 200 as it is. Unknown
symbols get Yahoo's 404 "No data found" answer. ``yahoo.adjclose`` and ``yahoo.timezones`` set a
symbol's adjusted close and exchange timezone. ``yahoo.down = True`` makes every request
raise ``requests.ConnectionError``. ``yahoo.calls`` records (symbol, params) of chart calls.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pandas as pd
import requests
from requests.adapters import BaseAdapter
from support import make_bars  # noqa: F401 - the store and source tests import it from here

NOT_FOUND_BODY = {
    "chart": {
        "result": None,
        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
    }
}


def chart_payload(
    symbol: str,
    bars: pd.DataFrame,
    tz: str = "America/New_York",
    *,
    adjclose: pd.Series | None = None,
    period: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A Yahoo ``/v8/finance/chart/<symbol>`` body for daily ``bars`` (lower-case columns).

    Each bar is stamped at 09:30 exchange time of its date. ``adjclose`` defaults to close.
    ``period`` (epoch seconds, end exclusive) keeps only the bars inside it.
    """
    stamps = [int(pd.Timestamp(f"{d.date()} 09:30").tz_localize(tz).timestamp()) for d in bars.index]
    adj = bars["close"] if adjclose is None else adjclose
    keep = [period is None or period[0] <= s < period[1] for s in stamps]
    rows = [i for i, k in enumerate(keep) if k]

    def column(values: Any) -> list[float]:
        arr = np.asarray(values, dtype="float64")
        return [float(arr[i]) for i in rows]

    meta = {
        "currency": "USD",
        "symbol": symbol,
        "exchangeName": "NMS",
        "instrumentType": "EQUITY",
        "exchangeTimezoneName": tz,
        "timezone": "EST",
        "gmtoffset": -18000,
        "priceHint": 2,
        "regularMarketTime": stamps[-1] if stamps else 0,
        "dataGranularity": "1d",
        "range": "",
        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
    }
    result: dict[str, Any] = {"meta": meta}
    if rows:
        result["timestamp"] = [stamps[i] for i in rows]
        quote = {c: column(bars[c]) for c in ("open", "high", "low", "close")}
        quote["volume"] = [int(v) for v in column(bars["volume"])]
        result["indicators"] = {"quote": [quote], "adjclose": [{"adjclose": column(adj)}]}
    else:  # what Yahoo sends for a range with no sessions
        result["indicators"] = {"quote": [{}], "adjclose": [{}]}
    return {"chart": {"result": [result], "error": None}}


class FakeYahoo:
    """In-memory Yahoo: ``answers`` maps SYMBOL -> bars frame, HTTP status code or 200 body."""

    def __init__(self, answers: Mapping[str, pd.DataFrame | int | str] | None = None) -> None:
        self.answers: dict[str, pd.DataFrame | int | str] = {k.upper(): v for k, v in (answers or {}).items()}
        self.adjclose: dict[str, pd.Series] = {}  # SYMBOL -> adjusted close, default close
        self.timezones: dict[str, str] = {}  # SYMBOL -> exchange tz, default New York
        self.down = False
        self.calls: list[tuple[str, dict[str, str]]] = []

    def chart_calls(self, symbol: str) -> list[dict[str, str]]:
        """Params of the price requests for ``symbol`` (the timezone probe excluded)."""
        return [p for s, p in self.calls if s == symbol and p.get("range") != "1d"]

    def _answer(self, path: str, params: dict[str, str]) -> tuple[int, str]:
        if "/v8/finance/chart/" in path:
            symbol = unquote(path.rsplit("/", 1)[-1]).upper()
            self.calls.append((symbol, params))
            got = self.answers.get(symbol, 404)
            if isinstance(got, str):  # a body as it is, answered 200
                return 200, got
            if isinstance(got, int):
                if got == 429:
                    return 429, "Too Many Requests"
                return got, json.dumps(NOT_FOUND_BODY)
            period = None
            if "period1" in params:
                period = (int(params["period1"]), int(params["period2"]))
            tz = self.timezones.get(symbol, "America/New_York")
            body = chart_payload(symbol, got, tz, adjclose=self.adjclose.get(symbol), period=period)
            return 200, json.dumps(body)
        if "getcrumb" in path:
            return 200, "fake-crumb"
        if "quoteSummary" in path:
            return 200, json.dumps({"quoteSummary": {"result": [], "error": None}})
        return 200, "{}"  # cookie page, consent and anything else: harmless

    def session(self) -> requests.Session:
        """A requests.Session answered by this fake (pass it as ``session=`` on every call)."""
        fake = self

        class Adapter(BaseAdapter):
            def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
                if fake.down:
                    raise requests.ConnectionError("simulated outage: network is unreachable")
                parts = urlsplit(request.url or "")
                params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                status, text = fake._answer(parts.path, params)
                response = requests.Response()
                response.status_code = status
                response.url = request.url or ""
                response.request = request
                response._content = text.encode()
                response.encoding = "utf-8"
                return response

            def close(self) -> None:
                pass

        session = requests.Session()
        session.mount("https://", Adapter())
        session.mount("http://", Adapter())
        return session
