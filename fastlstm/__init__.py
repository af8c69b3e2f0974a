"""fastlstm: LSTM networks trained and run on the CPU by compiled kernels, behind
scikit-learn estimators."""
from ._estimators import LSTMClassifier, LSTMRegressor

__all__ = ["LSTMClassifier", "LSTMRegressor"]
__version__ = "0.1.0"
