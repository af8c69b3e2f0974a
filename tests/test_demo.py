"""The main job: `fastlstm demo --quick` runs and beats its baselines."""
import io
import re
import subprocess
import sys

import numpy as np

from fastlstm.__main__ import demo
from fastlstm.datasets import binary_addition, bits_to_int, make_windows, noisy_sine


def test_demo_quick_beats_baselines():
    rows = demo(quick=True, out=io.StringIO())
    by_task = {row[0]: row for row in rows}
    _, _, mse, _, naive_mse, _ = by_task["sine forecast"]
    assert mse < naive_mse
    _, _, exact, _, no_carry, _ = by_task["binary addition"]
    assert exact > no_carry and exact > 0.9


def test_demo_command_line(tmp_path):
    # run from a neutral folder so the installed package is the one imported
    result = subprocess.run([sys.executable, "-m", "fastlstm", "demo", "--quick"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\| sine forecast \| test MSE \| [0-9.]+ \|", result.stdout)
    assert "| binary addition | exact sums |" in result.stdout


def test_windows_and_binary_addition_data():
    series = np.arange(20.0)
    X, y = make_windows(series, time_step=4, horizon=2)
    assert X.shape == (15, 4, 1) and y.shape == (15,)
    np.testing.assert_array_equal(X[3, :, 0], [3, 4, 5, 6])
    assert y[3] == 8
    multi = np.c_[series, -series]
    X, y = make_windows(multi, time_step=3)
    assert X.shape == (17, 3, 2) and y.shape == (17, 2)
    np.testing.assert_array_equal(X[5], multi[5:8])
    np.testing.assert_array_equal(y[5], multi[8])
    s = noisy_sine(1000, noise=0.1, random_state=0)
    assert s.shape == (1000,) and 0.05 < np.std(s - np.sin(np.linspace(0, 50, 1000))) < 0.15

    X, y, a, b = binary_addition(8)
    assert X.shape == (128 * 128, 8, 2) and y.shape == (128 * 128, 8)
    np.testing.assert_array_equal(bits_to_int(X[:, :, 0]), a)
    np.testing.assert_array_equal(bits_to_int(X[:, :, 1]), b)
    np.testing.assert_array_equal(bits_to_int(y), a + b)
