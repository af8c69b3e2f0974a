"""What importing fastlstm does to a process: no peer frameworks, no output, and no
failure where Numba has nowhere to write its cache."""
import subprocess
import sys

# a fit and a predict, then what the process holds; run in a fresh interpreter
FIT_AND_REPORT = """
import sys, warnings
import numpy as np
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastlstm
    model = fastlstm.LSTMRegressor(3, max_iter=2, random_state=0)
    model.fit(np.random.default_rng(0).standard_normal((20, 4, 1)), np.arange(20.0))
    model.predict(np.zeros((2, 4, 1)))
# (not pandas: scikit-learn imports it where installed)
peers = sorted(name for name in ("torch", "tensorflow", "keras", "matplotlib")
               if name in sys.modules)
print("peers:", peers)
print("warnings:", [str(w.message) for w in caught if w.category is RuntimeWarning])
"""


def run(prelude=""):
    result = subprocess.run([sys.executable, "-c", prelude + FIT_AND_REPORT],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_fit_and_predict_load_no_peer_framework_and_print_nothing():
    lines = run().splitlines()
    assert lines == ["peers: []", "warnings: []"]             # nothing else on stdout


def test_without_a_writable_numba_cache_folder_the_import_still_works():
    """Numba refuses cache=True where it finds no folder to write (a read-only
    install and home): the functions then compile per process, said once."""
    no_cache_folder = ("import numba.core.caching as caching\n"
                       "caching.CacheImpl._locator_classes = []\n")
    report = run(no_cache_folder)
    [warning_line] = [line for line in report.splitlines() if line.startswith("warnings:")]
    assert warning_line.count("NUMBA_CACHE_DIR") == 1
    assert "no writable folder to cache its compiled functions" in warning_line
    assert "peers: []" in report
