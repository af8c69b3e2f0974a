"""What importing fastlstm does to a process: no peer frameworks, no output, and no
failure where Numba has nowhere to write its cache."""
import pathlib
import shutil
import subprocess
import sys

import fastlstm

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


def run(folder, prelude=""):
    """The report of a fresh interpreter in folder (not the repository's root,
    whose source folder would be imported ahead of the installed package)."""
    result = subprocess.run([sys.executable, "-c", prelude + FIT_AND_REPORT], cwd=folder,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_fit_and_predict_load_no_peer_framework_and_print_nothing(tmp_path):
    lines = run(tmp_path).splitlines()
    assert lines == ["peers: []", "warnings: []"]             # nothing else on stdout


def test_without_a_writable_numba_cache_folder_the_import_still_works(tmp_path):
    """Numba refuses cache=True where it finds no folder to write (a read-only
    install and home): the functions then compile per process, said once."""
    no_cache_folder = ("import numba.core.caching as caching\n"
                       "caching.CacheImpl._locator_classes = []\n")
    report = run(tmp_path, no_cache_folder)
    [warning_line] = [line for line in report.splitlines() if line.startswith("warnings:")]
    assert warning_line.count("NUMBA_CACHE_DIR") == 1
    assert "no writable folder to cache its compiled functions" in warning_line
    assert "peers: []" in report


def test_a_source_folder_without_its_kernels_says_so(tmp_path):
    """Python started where the package's source lies imports that ahead of the
    installed package: without compiled kernels it is told so, not left with a
    "circular import"."""
    source = tmp_path / "fastlstm"
    source.mkdir()
    for module in pathlib.Path(fastlstm.__file__).parent.glob("*.py"):
        shutil.copy(module, source)
    # -S: no site-packages, where an editable install's finder would win over the
    # folder (the check runs before fastlstm imports anything from there)
    result = subprocess.run([sys.executable, "-S", "-c", "import fastlstm"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "fastlstm's compiled kernels (_kernels, _cells) are not in" in result.stderr
    assert "circular import" not in result.stderr


def test_a_fork_does_not_look_for_blas_libraries_fastlstm_never_limited(tmp_path):
    """The after-fork hook restores BLAS limits only where a block had set some:
    otherwise it runs no threadpoolctl discovery in the child (17 ms, in a fork
    hook of a process that may hold other threads)."""
    script = ("import os\n"
              "import fastlstm._threads as threads\n"
              "pid = os.fork()\n"
              "if pid == 0:\n"
              "    os._exit(0 if threads._libs is None else 3)\n"
              "_, status = os.waitpid(pid, 0)\n"
              "print(os.WEXITSTATUS(status))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
