"""Saved models: exact round trips, and clear errors (executing nothing) for damaged or hostile files."""

import json
import pickle
import zipfile

import numpy as np
import pytest

import jaxgmm
from conftest import make_blobs, random_params


def test_params_round_trip_is_bit_exact(tmp_path, covariance_type, dtype):
    params = random_params(np.random.default_rng(0), covariance_type, k=3, d=4, dtype=dtype)
    path = tmp_path / "params.jgmm"
    jaxgmm.save(path, params)
    assert path.exists() and not (tmp_path / "params.jgmm.npz").exists()  # written where asked
    loaded = jaxgmm.load(path)
    assert isinstance(loaded, jaxgmm.GMMParams) and loaded.covariance_type == covariance_type
    for name in ("weights", "means", "covariances"):
        a, b = np.asarray(getattr(params, name)), np.asarray(getattr(loaded, name))
        assert a.dtype == b.dtype == dtype
        assert a.tobytes() == b.tobytes(), name


def test_fitted_estimator_round_trip_is_bit_exact(tmp_path):
    pd = pytest.importorskip("pandas")
    from jaxgmm.sklearn import GaussianMixture

    X, *_ = make_blobs(seed=1, n=240, k=3, d=2)
    frame = pd.DataFrame(X, columns=["u", "v"])
    gm = GaussianMixture(3, covariance_type="diag", n_init=2, random_state=4, tol=1e-4,
                         means_init=X[:3].copy()).fit(frame)
    jaxgmm.save(tmp_path / "gm.npz", gm)
    loaded = jaxgmm.load(tmp_path / "gm.npz")
    assert type(loaded) is GaussianMixture
    assert set(loaded.get_params()) == set(gm.get_params())
    for name, value in gm.get_params().items():
        np.testing.assert_array_equal(loaded.get_params()[name], value)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_", "lower_bounds_"):
        a, b = getattr(gm, name), getattr(loaded, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    assert type(loaded.lower_bound_) is type(gm.lower_bound_) and loaded.lower_bound_ == gm.lower_bound_
    assert (loaded.converged_, loaded.n_iter_, loaded.n_features_in_) == (gm.converged_, gm.n_iter_, 2)
    assert list(loaded.feature_names_in_) == ["u", "v"]
    np.testing.assert_array_equal(loaded.predict_proba(frame), gm.predict_proba(frame))


def test_save_rejects_what_it_cannot_store(tmp_path):
    from jaxgmm.sklearn import GaussianMixture

    with pytest.raises(ValueError, match="fitted"):
        jaxgmm.save(tmp_path / "x.npz", GaussianMixture())
    with pytest.raises(TypeError, match="GMMParams"):
        jaxgmm.save(tmp_path / "x.npz", {"weights": [1.0]})


def good_file(tmp_path):
    params = random_params(np.random.default_rng(2), "full", k=2, d=3)
    path = tmp_path / "good.npz"
    jaxgmm.save(path, params)
    return path


def rewrite(tmp_path, path, change):
    """A copy of the archive ``path`` with members changed by ``change(dict) -> dict``."""
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    out = tmp_path / "changed.npz"
    with open(out, "wb") as f:
        np.savez(f, **change(members))
    return out


def with_header(members, **changes):
    header = json.loads(members["header"].tobytes())
    header.update(changes)
    return dict(members, header=np.frombuffer(json.dumps(header).encode(), np.uint8))


class Exploit:
    """Unpickling this would create a file: the proof that loading executed code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_damaged_and_hostile_files_raise_a_clear_error_and_execute_nothing(tmp_path):
    good = good_file(tmp_path)
    data = good.read_bytes()
    marker = tmp_path / "pwned"

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(bytes(range(256)) * 8)
    with zipfile.ZipFile(good) as z:
        means_at = data.index(b"\x93NUMPY", z.getinfo("means.npy").header_offset)
    flipped = bytearray(data)
    flipped[means_at + 128 + 10] ^= 0xFF  # a flipped byte in the means' numbers: the zip CRC catches it
    corrupted = tmp_path / "corrupted.npz"
    corrupted.write_bytes(bytes(flipped))
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps(Exploit(marker)))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    hostile = tmp_path / "hostile.npz"  # an object array (a pickle) as a member of a real model file
    with zipfile.ZipFile(hostile, "w") as z:
        with zipfile.ZipFile(good) as g:
            for name in g.namelist():
                z.writestr(name, g.read(name))
        with z.open("evil.npy", "w") as f:
            np.lib.format.write_array(f, np.array([Exploit(marker)], dtype=object), allow_pickle=True)
    hostile_means = tmp_path / "hostile_means.npz"
    with zipfile.ZipFile(hostile_means, "w") as z:
        with zipfile.ZipFile(good) as g:
            for name in g.namelist():
                if name != "means.npy":
                    z.writestr(name, g.read(name))
        with z.open("means.npy", "w") as f:
            np.lib.format.write_array(f, np.array([Exploit(marker)] * 6, dtype=object).reshape(2, 3), allow_pickle=True)

    cases = {
        truncated: "not a valid jaxgmm model",
        garbage: "not a valid jaxgmm model",
        corrupted: "damaged|not a valid",
        pickled: "not a valid jaxgmm model",
        single: "single array",
        hostile: "objects",
        hostile_means: "objects",
        rewrite(tmp_path, good, lambda m: with_header(m, format_version=99)): "format version 99",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message):
            jaxgmm.load(path)
        assert not marker.exists(), f"loading {path.name} executed code"

    other_cases = [
        (lambda m: with_header(m, format="something-else"), "format"),
        (lambda m: {k: v for k, v in m.items() if k != "header"}, "header"),
        (lambda m: dict(m, header=np.frombuffer(b"{not json", np.uint8)), "JSON"),
        (lambda m: with_header(m, covariance_type="banana"), "covariance_type"),
        (lambda m: {k: v for k, v in m.items() if k != "means"}, "'means' is missing"),
        (lambda m: dict(m, means=m["means"][:1]), "'means'.*shape"),
        (lambda m: dict(m, means=m["means"].astype(np.float16)), "'means'.*dtype"),
        (lambda m: dict(m, weights=m["weights"] * 2), "sum to 1"),
        (lambda m: dict(m, covariances=-m["covariances"]), "positive definite"),
        (lambda m: dict(m, extra=np.zeros(2)), "unexpected"),
    ]
    for change, message in other_cases:
        with pytest.raises(ValueError, match=message):
            jaxgmm.load(rewrite(tmp_path, good, change))
    with pytest.raises(FileNotFoundError):
        jaxgmm.load(tmp_path / "missing.npz")
