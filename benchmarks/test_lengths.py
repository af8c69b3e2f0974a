"""lengths.py's engines give the same figures on the same sets: both train and
predict every sequence (a quick set, one thread)."""
import json

import numpy as np
import pytest

import lengths


@pytest.mark.parametrize("name", lengths.SETS)
def test_the_sets_hold_several_lengths(name):
    X, y = lengths.make_set(name, quick=True)
    assert len(X) == len(y) and len({len(x) for x in X}) > 1
    assert {x.shape[1] for x in X} == {lengths.D} and set(np.unique(y)) == {0, 1}


@pytest.mark.parametrize("engine", ["fastlstm", "torch"])
def test_an_engine_reports_its_figures(engine, capsys, monkeypatch):
    if engine == "torch":
        pytest.importorskip("torch")
    calls = []
    real_best_of = lengths.best_of
    monkeypatch.setattr(lengths, "best_of",
                        lambda fn, repeats=3: calls.append(fn) or real_best_of(fn, 1))
    lengths.child(engine, "skewed", 1, quick=True)
    figures = json.loads(capsys.readouterr().out)
    assert len(calls) == 2              # a fit epoch and a predict, each timed
    assert figures["fit_s"] > 0 and figures["predict_s"] > 0 and figures["peak_mb"] > 0
