"""fastlstm: LSTM networks trained and run on the CPU by compiled kernels, behind
scikit-learn estimators."""
import importlib.util as _util
import os as _os

# Python run in the source folder imports it ahead of the installed package;
# without the compiled kernels the imports below would fail on a puzzling
# "circular import"
if _util.find_spec(f"{__name__}._kernels") is None or _util.find_spec(f"{__name__}._cells") is None:
    raise ImportError(
        f"fastlstm's compiled kernels (_kernels, _cells) are not in "
        f"{_os.path.dirname(__file__)}: that looks like the source folder, not an installed "
        "fastlstm. Run Python from another folder, or build them there first with "
        "`python setup.py build_ext --inplace`.")

from ._estimators import LSTMClassifier, LSTMRegressor, load  # noqa: E402

__all__ = ["LSTMClassifier", "LSTMRegressor", "load"]
__version__ = "0.1.0"
