"""Model files that execute no code when loaded: one NumPy .npz archive read with
allow_pickle=False, holding

    metadata        uint8 bytes of a UTF-8 JSON document: format name and version,
                    the estimator's class, constructor parameters and the fitted
                    attributes that are plain numbers, strings, lists or dicts
                    (a dict with keys other than strings as [key, value] pairs)
    params          (P,) the flat parameter buffer, float32 or float64
    array:<name>    each fitted attribute that is a numeric or string array
                    (classes_, for one); object arrays of str are stored as str
                    and listed in metadata["object_arrays"] to be restored as such

Every file is checked on the way in: a file that is not a zip archive, fails its
CRC, lacks a key, names another format, comes from a newer format version or
holds a parameter buffer of the wrong size or with NaN/inf gets a ValueError
that says which. The reader never unpickles anything, so a hostile file can at
worst be refused.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "fastlstm-model"
FORMAT_VERSION = 1

_JSON_SCALARS = (bool, int, float, str, type(None))


# JSON keys are strings: a dict with other keys (class_weight's int or bool labels)
# is written as {_PAIRS: [[key, value], ...]}
_PAIRS = "__pairs__"


def _jsonable(value):
    """value as plain JSON types, or raise TypeError. Tuples and numeric arrays
    become lists, numpy scalars Python scalars (float repr round-trips exactly),
    dtypes and scalar types their names ("float64")."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(
            value, (np.generic, float, int, bool))):
        return np.dtype(value).name
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufU":
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _PAIRS not in value:
            return {k: _jsonable(v) for k, v in value.items()}
        return {_PAIRS: [[_jsonable(k), _jsonable(v)] for k, v in value.items()]}
    raise TypeError(f"{type(value).__name__} is not plain data")


def _from_json(value):
    """What _jsonable wrote, with its dicts of other keys rebuilt."""
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if list(value) == [_PAIRS]:
            return {_key(k): _from_json(v) for k, v in value[_PAIRS]}
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _key(key):
    """A dict key read back: JSON gives lists for what were tuples."""
    return tuple(_key(k) for k in key) if isinstance(key, list) else key


def _storable_array(value):
    """value as an array np.load can read without pickle, or None if it cannot be:
    numbers, bools or strings (an object array of all-str becomes a str array)."""
    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        items = arr.ravel().tolist()
        if items and all(isinstance(v, str) for v in items):
            return arr.astype(str)
        return None
    return arr if arr.dtype.kind in "biufUS" else None


def write(path, class_name, params, fitted, network_args, flat_params):
    """Write one model file. params: constructor parameters; fitted: {name: value}
    of fitted attributes; network_args: what rebuilds the network; flat_params (P,).

    A path is written through a temporary file in the same folder and renamed into
    place, so an interrupted save never leaves half a model under the name.
    """
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "class": class_name,
            "network": _jsonable(network_args), "params": {}, "fitted": {},
            "object_arrays": []}
    arrays = {"params": np.ascontiguousarray(flat_params)}
    for name, value in params.items():
        try:
            meta["params"][name] = _jsonable(value)
        except TypeError:
            if name != "random_state":
                raise TypeError(f"cannot save parameter {name}={value!r}: only plain numbers, "
                                "strings and lists can go into a model file") from None
            # a RandomState object has done its work once the model is fitted
            meta["params"][name] = None
    for name, value in fitted.items():
        if isinstance(value, np.ndarray):
            arr = _storable_array(value)
            if arr is not None:
                arrays[f"array:{name}"] = arr
                if value.dtype.kind == "O":  # strings held as objects: restored as such
                    meta["object_arrays"].append(name)
                continue
        else:
            try:
                meta["fitted"][name] = _jsonable(value)
                continue
            except TypeError:
                pass
        raise TypeError(f"cannot save fitted attribute {name} of type "
                        f"{type(value).__name__} without pickle")
    blob = np.frombuffer(json.dumps(meta, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    arrays["metadata"] = blob

    if hasattr(path, "write"):
        np.savez(path, **arrays)
        return
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):   # else the error would name the temporary file
        raise FileNotFoundError(f"cannot save to {path!r}: no folder {folder!r}")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastlstm-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _first_bytes(where, n):
    """The first n bytes of a path or of a file object (left where it was)."""
    if not hasattr(where, "read"):
        with open(where, "rb") as f:
            return f.read(n)
    at = where.tell()
    head = where.read(n)
    where.seek(at)
    return head


def read(path):
    """-> (metadata dict, flat params, {name: array}) from a model file, checked."""
    where = path if hasattr(path, "read") else os.fspath(path)
    try:
        # told apart here: on anything else np.load's message is about unpickling
        head = _first_bytes(where, 6)
        if head.startswith(b"\x93NUMPY"):
            raise ValueError("it holds a single array, not a model archive")
        if not head.startswith(b"PK"):
            raise ValueError("it is empty" if not head else
                             "it is not a NumPy .npz archive, which a model file is")
        archive = np.load(where, allow_pickle=False)
        with archive:
            contents = {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"{path!r} is not a readable fastlstm model file: {err}") from None

    if "metadata" not in contents or "params" not in contents:
        raise ValueError(f"{path!r} is not a fastlstm model file (no metadata or params)")
    blob = contents.pop("metadata")
    try:
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise ValueError("metadata is not a byte string")
        meta = json.loads(blob.tobytes().decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path!r} is not a fastlstm model file: {err}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a fastlstm model file (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{path!r} has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path!r} was written in model format version {version}, newer than "
                         f"this fastlstm reads ({FORMAT_VERSION}): upgrade fastlstm to load it")
    for key in ("class", "network", "params", "fitted"):
        if key not in meta:
            raise ValueError(f"{path!r} is a damaged fastlstm model file: metadata lacks {key!r}")
    shapes = {"class": str, "network": list, "params": dict, "fitted": dict,
              "object_arrays": list}
    for key, kind in shapes.items():
        if key in meta and not isinstance(meta[key], kind):
            raise ValueError(f"{path!r} is a damaged fastlstm model file: {key} is a "
                             f"{type(meta[key]).__name__}, not a {kind.__name__}")
    for key in ("params", "fitted"):
        try:
            meta[key] = _from_json(meta[key])
        except (TypeError, ValueError) as err:  # malformed pairs, unhashable keys
            raise ValueError(f"{path!r} is a damaged fastlstm model file: {key}: {err}") from None

    flat = contents.pop("params")
    if flat.ndim != 1 or flat.dtype not in (np.float32, np.float64):
        raise ValueError(f"{path!r} is a damaged fastlstm model file: params are "
                         f"{flat.dtype} of shape {flat.shape}")
    if not np.isfinite(flat).all():
        raise ValueError(f"{path!r} is a damaged fastlstm model file: params hold NaN or inf")
    arrays = {}
    for key, value in contents.items():
        if not key.startswith("array:"):
            raise ValueError(f"{path!r} is not a fastlstm model file (unexpected entry {key!r})")
        arrays[key[len("array:"):]] = value
    for name in meta.get("object_arrays", []):
        if not isinstance(name, str) or name not in arrays or arrays[name].dtype.kind != "U":
            raise ValueError(f"{path!r} is a damaged fastlstm model file: no string array {name!r}")
        arrays[name] = arrays[name].astype(object)
    return meta, flat, arrays
