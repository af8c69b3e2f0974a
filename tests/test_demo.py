"""The main job: `fastlstm demo --quick` runs and beats its baselines."""
import importlib.util
import io
import re
import subprocess
import sys

import numpy as np
import pytest

from fastlstm._demo import _plot_sine, bits_per_char
from fastlstm.__main__ import demo
from fastlstm.datasets import (CharVocabulary, adding_problem, binary_addition, bits_to_int,
                               char_windows, make_windows, noisy_sine, pydoc_topics_text)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One in-process `demo --quick`: (summary rows, printed text, plot path)."""
    plot = tmp_path_factory.mktemp("demo") / "sine.png"
    out = io.StringIO()
    rows = demo(quick=True, out=out, progress=False, plot_path=str(plot))
    return rows, out.getvalue(), plot


def test_demo_quick_beats_baselines(quick_run):
    rows, text, _ = quick_run
    by_task = {row[0]: row for row in rows}
    assert list(by_task) == ["sine forecast", "binary addition", "char text", "long lag (T=100)"]
    _, _, mse, _, naive_mse, _ = by_task["sine forecast"]
    assert mse < naive_mse
    _, _, exact, _, no_carry, _ = by_task["binary addition"]
    assert exact > no_carry and exact > 0.9
    _, metric, bpc, baseline, unigram_bpc, _ = by_task["char text"]
    assert metric == "val bits/char" and baseline == "unigram"
    assert bpc < unigram_bpc - 0.5 and unigram_bpc > 4
    _, _, lstm_mse, baseline, rnn_mse, _ = by_task["long lag (T=100)"]
    assert baseline == "plain RNN" and lstm_mse < 0.02 and rnn_mse > 0.1
    assert all(row[5] > 0 for row in rows)                       # fit times are reported


def test_demo_prints_generated_text_and_plot(quick_run):
    _, text, plot = quick_run
    samples = re.findall(r"-- generated at temperature (\S+) from 'The ':\n((?:  \| .*\n)+)",
                         text)
    assert [t for t, _ in samples] == ["0.5", "1.0"]
    for _, lines in samples:
        body = "".join(line[4:] for line in lines.splitlines(keepends=True))
        assert len(body) > 100
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in text
    else:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(plot) in text


def test_demo_without_matplotlib_says_so(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import now fails
    out = io.StringIO()
    assert _plot_sine(str(tmp_path / "x.png"), np.zeros(3), np.zeros(3), np.zeros(3), out) is None
    assert "matplotlib is not installed" in out.getvalue()
    assert not (tmp_path / "x.png").exists()


def test_demo_plot_that_cannot_be_written_says_so(tmp_path):
    pytest.importorskip("matplotlib")
    out = io.StringIO()
    path = tmp_path / "missing" / "x.png"                       # savefig's OSError
    assert _plot_sine(str(path), np.zeros(3), np.zeros(3), np.zeros(3), out) is None
    assert "could not write the plot" in out.getvalue() and str(path) in out.getvalue()


@pytest.mark.parametrize("args, message", [
    (["demo", "--blas-threads", "-1"], "--blas-threads: expected 0 (no limit) or a positive"),
    (["demo", "--blas-threads", "two"], "--blas-threads: expected 0 (no limit) or a positive"),
    (["demo", "--plot", "no-such-folder/x.png"], "--plot no-such-folder/x.png: there is no "
                                                 "folder"),
])
def test_demo_command_line_refuses_bad_arguments_before_training(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "fastlstm", *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert result.stdout == ""                                  # nothing trained


def test_command_line_version(tmp_path):
    import fastlstm
    result = subprocess.run([sys.executable, "-m", "fastlstm", "--version"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == f"fastlstm {fastlstm.__version__}\n"


def test_demo_piped_into_a_reader_that_leaves_ends_quietly(tmp_path):
    """`fastlstm demo | head -1`: no BrokenPipeError traceback, a non-zero exit."""
    with subprocess.Popen([sys.executable, "-m", "fastlstm", "demo", "--quick", "--no-plot",
                           "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as demo_process:
        first = demo_process.stdout.readline()
        demo_process.stdout.close()                             # the reader leaves
        stderr = demo_process.stderr.read()
        returncode = demo_process.wait(timeout=300)
    assert first.startswith("== noisy sine forecasting")
    assert returncode == 1 and "Traceback" not in stderr, stderr


def test_bits_per_char_counts_unseen_characters_finitely():
    vocab = CharVocabulary("abc")
    proba = np.array([[[0.5, 0.5], [1.0, 0.0]]])                 # classes a, b; (1, 2, 2)
    bpc = bits_per_char(proba, np.array(["a", "b"]), np.array([["b", "a"]]), vocab, floor=0.0)
    assert bpc == pytest.approx(0.5)                             # (1 bit + 0 bits) / 2
    bpc = bits_per_char(proba, np.array(["a", "b"]), np.array([["a", "c"]]), vocab, floor=1e-3)
    expected = -(np.log2(0.999 * 0.5 + 1e-3 / 3) + np.log2(1e-3 / 3)) / 2
    assert bpc == pytest.approx(expected)


def test_demo_command_line(tmp_path):
    # run from a neutral folder so the installed package is the one imported
    # --blas-threads 1: the in-process run above leaves the threads to fastlstm
    result = subprocess.run([sys.executable, "-m", "fastlstm", "demo", "--quick", "--plot",
                             "sine.png", "--blas-threads", "1"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\| sine forecast \| test MSE \| [0-9.]+ \|", result.stdout)
    assert "| binary addition | exact sums |" in result.stdout
    assert re.search(r"\| char text \| val bits/char \| [0-9.]+ \| unigram \|", result.stdout)
    assert "| long lag (T=100) | adding test MSE |" in result.stdout
    # the estimators' progress bars go to stderr, one line per epoch when it is not a terminal
    assert "char text" in result.stderr
    assert re.search(r"Epoch 4 \[#+\] loss = [0-9.]+", result.stderr)
    assert (tmp_path / "sine.png").exists() == (importlib.util.find_spec("matplotlib") is not None)


def test_pydoc_topics_text_ships_with_python():
    text = pydoc_topics_text()
    assert len(text) > 100_000 and "assert" in text


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


@pytest.mark.parametrize("call, message", [
    (lambda: binary_addition(0), r"n_bits must be an int in \[1, 12\], got 0"),
    (lambda: binary_addition(64), r"n_bits must be an int in \[1, 12\], got 64"),
    (lambda: binary_addition(8.0), r"n_bits must be an int in \[1, 12\], got 8.0"),
    (lambda: make_windows(np.arange(10.0), 5.0), "time_step must be an int >= 1, got 5.0"),
    (lambda: make_windows(np.arange(10.0), 3, horizon=0), "horizon must be an int >= 1"),
    (lambda: bits_to_int(np.ones((2, 64), int)), "n_bits <= 63"),
    (lambda: adding_problem(10, 19), "n_timesteps must be an int >= 20, got 19"),
    (lambda: adding_problem(2.5), "n_samples must be an int >= 1, got 2.5"),
    (lambda: char_windows("abcdef", 2.0, CharVocabulary("abcdef")),
     "seq_len must be an int >= 1, got 2.0"),
    (lambda: char_windows("abcdef", 2, CharVocabulary("abcdef"), step=0),
     "step must be an int >= 1, got 0"),
    (lambda: CharVocabulary(["ab", "c"]), "one character each, got \\['ab'\\]"),
    (lambda: CharVocabulary(["a", 3]), "one character each, got \\[3\\]"),
])
def test_the_data_helpers_name_a_bad_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
    assert binary_addition(1)[0].shape == (1, 1, 2)              # 0 + 0: the smallest
