"""Backoff mode in the simulator: the provider's pushback switches the path to
its backoff config, which holds while the pushback lasts and ends once enough
deliveries succeed after it; the connections per path in the series show it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.result import run
from sim.scenario import Scenario
from tests.test_shaping_ramp_sim import PATH, SCENARIO

# max_deliveries_per_connection closes the connections open at the switch soon (a
# lowered limit opens no new one but lets those open run on, as KumoMTA does)
BACKOFF = '''
[["default".automation]]
regex = 'temporarily deferred'
duration = "1h"

["default".automation.action.Backoff]
config = {connection_limit = 1, max_deliveries_per_connection = 5}
deliveries = 20
'''


def test_backoff_enters_on_the_pattern_and_leaves_after_n_deliveries(tmp_path: Path) -> None:
    (tmp_path / "shaping.toml").write_text(BACKOFF)
    (tmp_path / "s.toml").write_text(SCENARIO)
    sc = Scenario.from_toml(tmp_path / "s.toml")
    result = run(sc)
    t0 = sc.start_epoch
    recs = [r for r in result.records if r["type"] == "Shaping"]
    assert recs[0]["event"] == "fired" and recs[-1]["event"] == "lapsed"
    assert recs[-1]["reason"] == "deliveries"  # not the hour: the deliveries ended it
    entered, left = recs[0]["timestamp"] - t0, recs[-1]["timestamp"] - t0
    pushed = [r["timestamp"] - t0 for r in result.records if r["type"] == "TransientFailure"
              and "temporarily deferred" in (r["response"]["content"] or "")]
    assert entered == min(pushed) and max(pushed) < left < max(pushed) + 120
    # 20 deliveries on the path between the last pushback and the end (records carry
    # whole seconds: some in the last pushback's second came before it)
    done = [r["timestamp"] - t0 for r in result.records if r["type"] == "Delivery"]
    last = max(pushed)
    assert sum(last < d < left for d in done) < 20 <= sum(last <= d <= left for d in done)
    t = result.series["t"]
    conns = np.asarray(result.series[f"connections:{PATH}"])
    assert conns[(t > entered + 30) & (t < left - 1)].max() == 1
    assert conns[t < entered].max() > 1 and conns[t > left + 60].max() > 1
