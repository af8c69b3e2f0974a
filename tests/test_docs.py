"""The docs run: docstring examples and the README's Python blocks."""
import doctest
import re
from pathlib import Path

import pytest

import fastlstm._estimators

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_docstring_examples():
    result = doctest.testmod(fastlstm._estimators, optionflags=doctest.ELLIPSIS)
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
