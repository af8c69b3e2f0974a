"""fastlstm: LSTM networks trained and run on the CPU by compiled kernels, behind
scikit-learn estimators."""
from ._estimators import LSTMClassifier, LSTMRegressor, load

__all__ = ["LSTMClassifier", "LSTMRegressor", "load"]
__version__ = "0.1.0"
