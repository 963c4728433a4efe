"""bench.delivery and bench.e2e tables: medians and within-round ratios, exactly.

The runs themselves need smtp-sink (see test_bench_smoke.py); what is checked
here is the arithmetic the quoted figures rest on: a ratio is taken inside a
round, the median over rounds is quoted, and a missing peer reads "n/a" with
its reason instead of a number.
"""

from __future__ import annotations

from bench import delivery, e2e
from bench.delivery import Measure


def _round(src: float, aio: float, eg: float | None, nj: float) -> list[Measure]:
    return [Measure("smtp-source", "reuse", src), Measure("aiosmtplib", "reuse", aio),
            Measure("egress", "reuse", eg, "" if eg else "sink saw 5 of 10 in 1 s", 0.9),
            Measure("egress-nojournal", "reuse", nj, "", 1.0)]


def test_delivery_ratios_are_within_round_and_median() -> None:
    t = delivery.Table(messages={"reuse": 10}, rounds=3, measures=[
        _round(10_000, 2_000, 4_000, 5_000),   # 2.0x aiosmtplib, 0.4x source
        _round(5_000, 1_000, 3_000, 3_000),    # 3.0x, 0.6x: a slow round still counts
        _round(8_000, 4_000, None, 4_000),     # egress did not finish: no ratio
    ])
    assert t.ratios("egress", "aiosmtplib", "reuse") == [2.0, 3.0]
    assert t.rates("egress", "reuse") == [4_000, 3_000]
    rows = {name: (value, note) for name, value, note in delivery.summary_rows(t)}
    assert rows["delivery reuse (10): egress msg/s"] == (
        "3,500", "min 3,000 max 4,000, cpu/wall 0.90, 262 us CPU/msg")  # 225 and 300 us
    assert rows["delivery reuse (10): smtp-source msg/s"] == ("8,000", "min 5,000 max 10,000")
    assert rows["delivery reuse: egress / aiosmtplib"] == ("2.50x", ">= 1.5x")
    assert rows["delivery reuse: egress / smtp-source"] == ("0.50x", ">= 0.35x")
    assert rows["delivery reuse: egress / egress-nojournal"] == (
        "0.90x", "journal's share")  # 0.8 and 1.0


def test_delivery_missing_peer_reads_na_with_reason() -> None:
    t = delivery.Table(messages={"rcpt10": 5}, rounds=1, measures=[[
        Measure("smtp-source", "rcpt10", None, "not available: smtp-source is not installed"),
        Measure("egress", "rcpt10", 900.0)]])
    rows = {name: (value, note) for name, value, note in delivery.summary_rows(t)}
    assert rows["delivery rcpt10 (5): smtp-source msg/s"] == (
        "n/a", "not available: smtp-source is not installed")
    assert rows["delivery rcpt10: egress / smtp-source"] == ("n/a", "")


def test_e2e_rows() -> None:
    t = e2e.Table(messages=100, rounds=2, runs=[
        [e2e.Run("direct", 8_000.0), e2e.Run("egress", 3_000.0, 0.98),
         e2e.Run("postfix", 600.0), e2e.Run("slimta", 2_000.0, 0.6)],
        [e2e.Run("direct", 6_000.0), e2e.Run("egress", 2_000.0, 1.0),
         e2e.Run("postfix", 500.0), e2e.Run("slimta", 2_000.0, 0.7)],
    ])
    rows = {name: (value, note) for name, value, note in e2e.summary_rows(t)}
    assert rows["e2e (100): egress msg/s"] == ("2,500", "min 2,000 max 3,000, relay cpu/wall 0.99")
    assert rows["e2e: egress / slimta"] == ("1.25x", ">= 1.5x")   # 1.5 and 1.0
    assert rows["e2e: egress / postfix"] == ("4.50x", ">= 3x")    # 5.0 and 4.0
    assert rows["e2e: slimta / postfix"] == ("3.67x", "")
    t.runs[0][1] = e2e.Run("egress", None, note="not available: `egress deliver` is not built")
    t.runs[1][1] = e2e.Run("egress", None, note="not available: `egress deliver` is not built")
    rows = {name: (value, note) for name, value, note in e2e.summary_rows(t)}
    assert rows["e2e (100): egress msg/s"] == (
        "n/a", "not available: `egress deliver` is not built")
    assert rows["e2e: egress / slimta"] == ("n/a", ">= 1.5x")
