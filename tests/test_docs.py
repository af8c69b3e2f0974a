"""The docs run: docstring examples and the README's Python blocks."""
import doctest
import re
from pathlib import Path

import pytest

import fastlstm._estimators
import fastlstm.datasets

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.mark.parametrize("module", [fastlstm._estimators, fastlstm.datasets])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4
    assert result.failed == 0


def test_readme_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    out = capsys.readouterr().out
    mse = float(re.search(r"test MSE (\S+)", out).group(1))
    assert mse < 0.015
    assert "exact sums: 1.0" in out
    assert "True True" in out                                   # stepping == whole sequence
    assert float(re.search(r"100-step forecast MSE (\S+)", out).group(1)) < 0.05
    generated = out.strip().splitlines()[-1]
    assert len(generated) >= 30 and generated.count(" ") >= 3   # words, not one repeated char


def test_kerass_epochs_as_the_readme_translates_them():
    """README: Keras's epochs=100 is max_iter=100, n_iter_no_change=100, alpha=0;
    tol=0 alone still stops on a plateau (here after 54 epochs)."""
    from fastlstm import LSTMRegressor
    from fastlstm.datasets import make_windows, noisy_sine
    assert "`epochs=100` is `max_iter=100, n_iter_no_change=100, alpha=0`" in README.read_text()
    X, y = make_windows(noisy_sine(300, noise=0.1), time_step=10)
    params = dict(hidden_layer_sizes=(4,), max_iter=100, alpha=0, learning_rate_init=0.03,
                  batch_size=32, random_state=0)
    assert LSTMRegressor(**params, n_iter_no_change=100).fit(X, y).n_iter_ == 100
    assert LSTMRegressor(**params, tol=0).fit(X, y).n_iter_ < 100
