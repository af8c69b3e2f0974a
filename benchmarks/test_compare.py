"""compare.py's timing loop: the engines take turns, and one engine's failure stops
only that engine. Fake engines stand in for the real ones (no torch needed)."""
import numpy as np
import pytest

import compare


class FakeEngine:
    """Records its calls in a log shared by all engines; `fails` names the call
    ("warm_up", "call" or "predict") that raises."""

    def __init__(self, name, log, fails=None):
        self.name, self.log, self.fails = name, log, fails

    def use_threads(self):
        pass

    def _run(self, what):
        if what == self.fails:
            raise RuntimeError(f"{self.name} {what} broke")
        self.log.append((self.name, what))

    def warm_up(self):
        self._run("warm_up")

    def call(self):
        self._run("call")

    def predict(self, X):
        self._run("predict")


@pytest.fixture
def no_pauses(monkeypatch):
    """Turns of one call each, no pause: the order of the calls shows the turns."""
    monkeypatch.setattr(compare, "TURN_S", 0.0)
    monkeypatch.setattr(compare, "SETTLE_S", 0.0)


def turns(engines, repeats=3):
    return compare.take_turns(engines, lambda e: e.warm_up(), lambda e: e.call(), n=10,
                              repeats=repeats, min_time_s=0.0)


def test_engines_take_turns_and_each_gets_its_best_rate(no_pauses):
    log = []
    engines = {name: FakeEngine(name, log) for name in ("a", "b", "c")}
    result = turns(engines, repeats=3)
    calls = [name for name, what in log if what == "call"]
    assert calls == ["a", "b", "c"] * 3
    assert [name for name, what in log if what == "warm_up"] == ["a", "b", "c"]
    assert log.index(("c", "warm_up")) < log.index(("a", "call"))   # warm-ups come first
    for name in engines:
        assert isinstance(result[name], float) and result[name] > 0


def test_a_turn_lasts_turn_s_of_calls(monkeypatch):
    monkeypatch.setattr(compare, "SETTLE_S", 0.0)
    monkeypatch.setattr(compare, "TURN_S", 60.0)   # every call fits into the first turn
    log = []
    engines = {name: FakeEngine(name, log) for name in ("a", "b")}
    turns(engines, repeats=4)
    assert [name for name, what in log if what == "call"] == ["a"] * 4 + ["b"] * 4


@pytest.mark.parametrize("fails", ["warm_up", "call"])
def test_a_failing_engine_stops_alone(no_pauses, fails):
    log = []
    engines = {"a": FakeEngine("a", log, fails=fails), "b": FakeEngine("b", log)}
    result = turns(engines, repeats=3)
    assert isinstance(result["a"], RuntimeError) and fails in str(result["a"])
    assert isinstance(result["b"], float)
    assert [name for name, what in log if what == "call"] == ["b"] * 3


def test_latency_rounds_take_turns_and_report_failures(no_pauses):
    log = []
    engines = {"a": FakeEngine("a", log), "b": FakeEngine("b", log, fails="predict")}
    X = np.zeros((4, 3, 2), np.float32)
    result = compare.latency_turns(engines, X, budget_s=0.0, rounds=2, min_calls=2)
    assert isinstance(result["b"], RuntimeError)
    assert isinstance(result["a"], float) and result["a"] > 0
    # a's warm-up call, then two rounds of two calls
    assert [name for name, _ in log] == ["a"] * 5
