"""save/load: a model file that executes no code when read, versioned, checked."""
import io
import json
import pickle
import zipfile

import numpy as np
import pytest

import fastlstm
from fastlstm import LSTMClassifier, LSTMRegressor, _persist

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def data(n=40, T=6, D=3, seed=0, dtype=np.float32):
    X = np.random.default_rng(seed).standard_normal((n, T, D)).astype(dtype)
    return X, X[:, :, 0].sum(axis=1)


@pytest.fixture(scope="module")
def models():
    X, s = data()
    X64 = X.astype(np.float64)
    return X, X64, {
        "regressor": LSTMRegressor(hidden_layer_sizes=(5, 4), max_iter=2, random_state=0).fit(X, s),
        "regressor64-2out": LSTMRegressor(hidden_layer_sizes=3, max_iter=2, random_state=0,
                                          dropout=0.1, dtype="float64").fit(X64, np.c_[s, -s]),
        "sequence": LSTMRegressor(hidden_layer_sizes=3, output="sequence", max_iter=2,
                                  random_state=0).fit(X, X[:, :, 1]),
        "clf-str": LSTMClassifier(hidden_layer_sizes=(4,), max_iter=2,
                                  random_state=0).fit(X, np.where(s > 0, "up", "down")),
        "clf-obj-str": LSTMClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(
            X, np.array(["x", "y", "z"] * 13 + ["x"], dtype=object)),
        "clf-int": LSTMClassifier(hidden_layer_sizes=(4, 2), max_iter=2,
                                  random_state=0).fit(X, np.arange(40) % 3 * 7 - 5),
        "clf-2d-X": LSTMClassifier(hidden_layer_sizes=3, max_iter=2,
                                   random_state=0).fit(X[:, :, 0], s > 0),
    }


@pytest.mark.parametrize("name", ["regressor", "regressor64-2out", "sequence", "clf-str",
                                  "clf-obj-str", "clf-int", "clf-2d-X"])
def test_round_trip_is_bit_identical(models, name, tmp_path):
    X, X64, fitted = models
    model = fitted[name]
    Xin = X64 if "64" in name else (X[:, :, 0] if "2d" in name else X)
    path = tmp_path / "model.fastlstm"              # the name is kept as given
    model.save(path)
    assert path.exists() and not list(tmp_path.glob(".fastlstm-*"))  # no temp file left
    restored = fastlstm.load(path)
    assert type(restored) is type(model)
    assert restored.get_params() == model.get_params()
    np.testing.assert_array_equal(restored.network_.params, model.network_.params)
    assert restored.network_.params.dtype == model.network_.params.dtype
    pred, pred_back = model.predict(Xin), restored.predict(Xin)
    assert pred.dtype.kind == pred_back.dtype.kind and pred.shape == pred_back.shape
    np.testing.assert_array_equal(pred_back, pred)
    if isinstance(model, LSTMClassifier):
        assert restored.classes_.tolist() == model.classes_.tolist()
        np.testing.assert_array_equal(restored.predict_proba(Xin), model.predict_proba(Xin))
    assert restored.loss_curve_ == model.loss_curve_ and restored.n_iter_ == model.n_iter_
    assert restored.n_features_in_ == model.n_features_in_
    # the restored model is a normal estimator: it refits, and its class loader agrees
    assert type(model).load(path).score(Xin, model.predict(Xin)) == pytest.approx(1.0)


def test_load_refuses_the_other_class(models, tmp_path):
    models[2]["regressor"].save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="holds a LSTMRegressor, not a LSTMClassifier"):
        LSTMClassifier.load(tmp_path / "m.npz")


def test_save_to_file_object_and_unfitted(models):
    buffer = io.BytesIO()
    models[2]["clf-int"].save(buffer)
    buffer.seek(0)
    restored = fastlstm.load(buffer)
    np.testing.assert_array_equal(restored.predict(models[0]), models[2]["clf-int"].predict(models[0]))
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        LSTMRegressor().save(io.BytesIO())


def test_random_state_object_is_not_needed_after_fit(tmp_path):
    X, s = data()
    model = LSTMRegressor(hidden_layer_sizes=2, max_iter=1,
                          random_state=np.random.RandomState(0)).fit(X, s)
    model.save(tmp_path / "m.npz")
    restored = fastlstm.load(tmp_path / "m.npz")
    assert restored.random_state is None
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))


@pytest.mark.parametrize("params, labels", [
    (dict(class_weight={0: 1.0, 1: 2.5}), np.arange(40) % 2),
    (dict(class_weight={np.int64(-5): 2.0, np.int64(2): 1.0, np.int64(9): 0.5}),
     np.arange(40) % 3 * 7 - 5),
    (dict(class_weight={True: 3.0, False: 1.0}), np.arange(40) % 2 == 0),
    (dict(class_weight={"up": 2.0, "down": 1.0}), np.where(np.arange(40) % 2, "up", "down")),
    (dict(dtype=np.float64, hidden_layer_sizes=np.array([4, 3])), np.arange(40) % 2),
    (dict(dtype=np.dtype("float32"), hidden_layer_sizes=[np.int64(3)]), np.arange(40) % 2),
])
def test_parameters_fit_accepts_are_saved(params, labels, tmp_path):
    X, _ = data()
    model = LSTMClassifier(max_iter=1, random_state=0, **params).fit(X, labels)
    model.save(tmp_path / "m.npz")
    restored = fastlstm.load(tmp_path / "m.npz")
    for name, value in params.items():
        back = restored.get_params()[name]
        if name == "class_weight":                    # the same labels, the same weights
            plain = [k.item() if isinstance(k, np.generic) else k for k in value]
            assert back == value and [type(k) for k in back] == [type(k) for k in plain]
        elif name == "dtype":
            assert np.dtype(back) == np.dtype(value)
        else:
            assert tuple(back) == tuple(int(v) for v in value)
    np.testing.assert_array_equal(restored.predict_proba(X), model.predict_proba(X))
    restored.set_params(warm_start=True).fit(X, labels)   # the restored parameters fit


# ---- refusing bad files --------------------------------------------------------

def saved_bytes(model):
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getvalue()


def rewrite(model, edit_meta=None, edit_arrays=None):
    """A model file with its metadata JSON and/or arrays changed."""
    with np.load(io.BytesIO(saved_bytes(model)), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(arrays["metadata"].tobytes())
    if edit_meta:
        edit_meta(meta)
    arrays["metadata"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    if edit_arrays:
        edit_arrays(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    return buffer


def test_pickle_file_is_refused_without_running_it(tmp_path, models):
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(ran), "w"))

    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(Payload()))
    # and no advice to load it "unsafely" with allow_pickle, as numpy's message gives
    with pytest.raises(ValueError, match="not a readable fastlstm model file: it is not a "
                                         "NumPy .npz archive, which a model file is$"):
        fastlstm.load(path)
    with pytest.raises(ValueError, match="not a NumPy .npz archive"):
        fastlstm.load(io.BytesIO(path.read_bytes()))
    np.save(tmp_path / "evil_array.npy", np.array([Payload()], dtype=object))
    with pytest.raises(ValueError, match="not a readable fastlstm model file: it holds a single"):
        fastlstm.load(tmp_path / "evil_array.npy")
    # an .npz whose entry is an object array is refused too
    buffer = rewrite(models[2]["regressor"], edit_arrays=lambda a: a.update(
        {"array:classes_": np.array([Payload()], dtype=object)}))
    with pytest.raises(ValueError, match="not a readable fastlstm model file"):
        fastlstm.load(buffer)
    assert not ran.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "not a readable fastlstm model file"),              # truncated
    (lambda b: b"PK\x03\x04" + b"\x00" * 100, "not a readable fastlstm model file"),  # junk zip
    (lambda b: b"hello, world", "not a readable fastlstm model file"),               # foreign
    (lambda b: b"", "not a readable fastlstm model file: it is empty"),              # empty
])
def test_corrupt_bytes_are_refused(models, damage, message, tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(damage(saved_bytes(models[2]["regressor"])))
    with pytest.raises(ValueError, match=message):
        fastlstm.load(path)


def test_saving_into_a_missing_folder_names_the_path_asked_for(models, tmp_path):
    path = tmp_path / "missing" / "m.fastlstm"
    with pytest.raises(FileNotFoundError, match=f"cannot save to '{path}': no folder"):
        models[2]["regressor"].save(path)


def test_flipped_byte_fails_the_checksum(models, tmp_path):
    raw = bytearray(saved_bytes(models[2]["regressor"]))
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        info = z.getinfo("params.npy")
    # a byte inside the stored params data (after the local header and .npy header)
    raw[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="not a readable fastlstm model file.*CRC"):
        fastlstm.load(tmp_path / "bad.npz")


def test_foreign_npz_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="not a fastlstm model file"):
        fastlstm.load(tmp_path / "other.npz")
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(ValueError, match="single array, not a model archive"):
        fastlstm.load(tmp_path / "one.npy")


@pytest.mark.parametrize("edit_meta, edit_arrays, message", [
    (lambda m: m.update(format="something-else"), None, "not a fastlstm model file"),
    (lambda m: m.update(format_version=_persist.FORMAT_VERSION + 1), None,
     "newer than this fastlstm reads .*upgrade"),
    (lambda m: m.update(format_version="1"), None, "invalid format version"),
    (lambda m: m.pop("network"), None, "lacks 'network'"),
    (lambda m: m.update({"class": "Evil"}), None, "unknown estimator class 'Evil'"),
    (lambda m: m["params"].update(evil=1), None, r"unknown parameters \['evil'\]"),
    (lambda m: m["params"].update(dropout=3), None, "dropout"),
    (lambda m: m["params"].update(class_weight={"__pairs__": [[1]]}), None, "damaged.*params"),
    (lambda m: m["params"].update(class_weight={"__pairs__": [[{}, 1]]}), None,
     "damaged.*params"),
    (lambda m: m["fitted"].update(predict=1), None, "bad attribute name 'predict'"),
    (lambda m: m["fitted"].update(_loss=1), None, "bad attribute name '_loss'"),
    (lambda m: m["fitted"].update(__class__=1), None, "bad attribute name '__class__'"),
    (lambda m: m["fitted"].pop("n_timesteps_in_"), None, "missing fitted attributes"),
    (lambda m: m["fitted"].update(n_features_in_=4), None, "n_features_in_=4 does not fit"),
    (lambda m: m["fitted"].update(_x_ndim="3"), None, "_x_ndim='3'"),
    (lambda m: m["fitted"].update(n_timesteps_in_=0), None, "n_timesteps_in_=0"),
    (lambda m: m["fitted"].update(n_outputs_=2), None, "n_outputs_=2"),
    (lambda m: m["fitted"].update(_output="both"), None, "_output='both'"),
    (lambda m: m.update(params=[]), None, "params is a list, not a dict"),
    (lambda m: m.update(fitted=[]), None, "fitted is a list, not a dict"),
    (lambda m: m.update(object_arrays=1), None, "object_arrays is a int, not a list"),
    (lambda m: m.update({"class": []}), None, "class is a list, not a str"),
    (lambda m: m["fitted"].update(_optimizer=0), None, "bad attribute name '_optimizer'"),
    (lambda m: m["fitted"].update(n_iter_="x"), None, "n_iter_='x'"),
    (lambda m: m["fitted"].update(loss_curve_=3), None, "loss_curve_=3"),
    (lambda m: m["fitted"].update(best_loss_=None), None, "best_loss_=None"),
    (lambda m: m["fitted"].update(_step_features=3), None, "_step_features=3"),
    (lambda m: m["network"].__setitem__(1, [7]), None, "do not fit the network"),
    (None, lambda a: a.update(params=a["params"][:-1]), "do not fit the network"),
    (None, lambda a: a.update(params=a["params"].astype(np.int32)), "params are int32"),
    (None, lambda a: a["params"].__setitem__(0, np.nan), "NaN or inf"),
    (None, lambda a: a.update(metadata=np.zeros(3)), "metadata is not a byte string"),
    (None, lambda a: a.update(metadata=np.frombuffer(b"\xff\xfe", np.uint8)), "not a fastlstm"),
    (None, lambda a: a.update(metadata=np.frombuffer(b"[1]", np.uint8)), "not a JSON object"),
    (None, lambda a: a.pop("metadata"), "no metadata or params"),
    (None, lambda a: a.update(extra=np.ones(2)), "unexpected entry 'extra'"),
])
def test_inconsistent_files_are_refused(models, edit_meta, edit_arrays, message):
    buffer = rewrite(models[2]["regressor"], edit_meta, edit_arrays)
    with pytest.raises(ValueError, match=message):
        fastlstm.load(buffer)


def test_files_from_before_the_fitted_output_was_kept_read_their_parameters(models):
    model = models[2]["regressor"]
    buffer = rewrite(model, lambda m: [m["fitted"].pop(name) for name in
                                       ("_output", "_step_features")])
    loaded = fastlstm.load(buffer)
    assert (loaded._output, loaded._step_features) == (model.output, model.step_features)


def test_classes_must_fit_the_head(models):
    buffer = rewrite(models[2]["clf-str"], edit_arrays=lambda a: a.update(
        {"array:classes_": np.array(["a", "b", "c"])}))
    with pytest.raises(ValueError, match="3 classes for a head of 2 outputs"):
        fastlstm.load(buffer)
