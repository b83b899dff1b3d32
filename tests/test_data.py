"""Tests for npvae.data: IDX reading, the MNIST loader, preprocessing, batching."""

import gzip
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npvae import data
from npvae.errors import ConfigError, DataError
from tests.helpers import IDX_TYPE_CODES, idx_bytes, write_idx

def write_mnist_like(folder, n_train=12, n_test=5, shape=(4, 3), gz=True, seed=0):
    """Write a tiny four-file MNIST-like dataset into ``folder``; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, name in data.MNIST_FILES.items():
        write_idx(folder / (f"{name}.gz" if gz else name), arrays[key], gz=gz)
    return arrays


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("dtype", list(IDX_TYPE_CODES))
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip_every_type(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    out = data.read_idx(write_idx(tmp_path / "a.idx", array, gz=gz))
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)
    out[0] = 0  # a writable copy, not a view of the file bytes


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    dtype=st.sampled_from(list(IDX_TYPE_CODES)),
    gz=st.booleans(),
)
def test_read_idx_round_trip_shapes(tmp_path_factory, shape, dtype, gz):
    path = tmp_path_factory.mktemp("idx") / "a"
    array = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
    out = data.read_idx(write_idx(path, array, gz=gz))
    assert out.shape == tuple(shape)
    np.testing.assert_array_equal(out, array)


def test_read_idx_wrong_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01" + idx_bytes(np.zeros(3, np.uint8))[1:])
    with pytest.raises(DataError, match="magic") as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_unknown_type_code(tmp_path):
    raw = bytearray(idx_bytes(np.zeros(3, np.uint8)))
    raw[2] = 0x0A
    path = tmp_path / "bad"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="type code 0x0A") as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_truncated(tmp_path, gz):
    raw = idx_bytes(np.zeros((2, 3), np.int32))[:-1]
    path = tmp_path / "bad"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError, match="truncated") as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(idx_bytes(np.zeros((2, 3), np.uint8))[:6])
    with pytest.raises(DataError, match="truncated IDX header"):
        data.read_idx(path)


def test_read_idx_trailing_bytes(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"xyz")
    with pytest.raises(DataError, match="3 trailing bytes") as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_read_idx_corrupt_gzip(tmp_path, damage):
    blob = bytearray(gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8))))
    if damage == "cut":
        blob = blob[: len(blob) // 2]
    else:
        blob[-6] ^= 0xFF  # inside the CRC-32 trailer
    path = tmp_path / "bad.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="corrupt gzip") as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        data.read_idx(tmp_path / "nope")


# ---------------------------------------------------------------- load_mnist


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_like_folder(tmp_path, gz):
    arrays = write_mnist_like(tmp_path, gz=gz)
    ds = data.load_mnist(tmp_path)
    for key, array in arrays.items():
        np.testing.assert_array_equal(getattr(ds, key), array)
    assert ds.x_train.shape[1:] == (4, 3)


def test_load_mnist_missing_file(tmp_path):
    write_mnist_like(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        data.load_mnist(tmp_path)


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist_count_mismatch(tmp_path, split):
    write_mnist_like(tmp_path)
    name = data.MNIST_FILES[f"y_{split}"]
    write_idx(tmp_path / f"{name}.gz", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="3 labels") as err:
        data.load_mnist(tmp_path)
    assert name in str(err.value)


def test_load_mnist_image_shape_mismatch(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 2, 2), np.uint8))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*differs"):
        data.load_mnist(tmp_path)


def test_load_mnist_wrong_image_dtype(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((12, 4, 3), np.float32))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*3-D uint8"):
        data.load_mnist(tmp_path)


def test_load_mnist_labels_not_1d(tmp_path):
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros((12, 1), np.uint8))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*1-D"):
        data.load_mnist(tmp_path)


def test_load_mnist_checksums_file(tmp_path):
    write_mnist_like(tmp_path, gz=True)
    name = "train-labels-idx1-ubyte"
    idx = gzip.decompress((tmp_path / f"{name}.gz").read_bytes())
    good = hashlib.sha256(idx).hexdigest()
    (tmp_path / "checksums.sha256").write_text(f"{good}  {name}\n")
    data.load_mnist(tmp_path)  # a matching digest passes

    wrong = "0" * 64
    (tmp_path / "checksums.sha256").write_text(f"{wrong}  {name}\n")
    with pytest.raises(DataError, match="SHA-256 mismatch") as err:
        data.load_mnist(tmp_path)
    message = str(err.value)
    assert name in message and wrong in message and good in message
    data.load_mnist(tmp_path, verify=False)  # verification can be skipped


def test_load_mnist_checksum_of_gz_as_stored(tmp_path):
    write_mnist_like(tmp_path, gz=True)
    (tmp_path / "checksums.sha256").write_text(
        f"{'f' * 64} *t10k-images-idx3-ubyte.gz\n"
    )
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz.*expected f{64}"):
        data.load_mnist(tmp_path)


def test_shipped_mnist():
    ds = data.load_mnist()  # verifies the README's SHA-256 digests
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == ds.y_train.dtype == np.uint8
    assert ds.x_train.shape[1:] == (28, 28)
    assert np.bincount(ds.y_train).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949
    ]
    assert np.bincount(ds.y_test).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009
    ]


def test_shipped_checksums_match_readme():
    readme = (data.MNIST_DIR / "README.md").read_text()
    for name, digest in data.MNIST_SHA256.items():
        assert f"| {name}.gz |" in readme and digest in readme


def test_shipped_mnist_is_verified(monkeypatch):
    monkeypatch.setitem(data.MNIST_SHA256, "t10k-labels-idx1-ubyte", "0" * 64)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*SHA-256 mismatch"):
        data.load_mnist()
    data.load_mnist(verify=False)


# ---------------------------------------------------------------- preprocessing


def test_to_unit_interval():
    images = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    x = data.to_unit_interval(images)
    assert x.shape == (1, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x, [[0.0, 1.0, 0.2, 0.4]], rtol=1e-6)
    assert data.to_unit_interval(images, dtype=np.float64).dtype == np.float64
    with pytest.raises(DataError, match="uint8"):
        data.to_unit_interval(images.astype(np.float32))


def test_binarize_threshold():
    x = np.array([[0.0, 0.5, 0.51, 1.0]], dtype=np.float32)
    out = data.binarize_threshold(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 1, 1]])


def test_binarize_dynamic_mean_and_seeding():
    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0], dtype=np.float32)
    x = np.tile(p, (20000, 1))
    out = data.binarize_dynamic(x, np.random.default_rng(0))
    assert out.dtype == np.float32 and set(np.unique(out)) <= {0.0, 1.0}
    # Standard error of each column mean is at most 0.5 / sqrt(20000) ~ 0.0035.
    np.testing.assert_allclose(out.mean(axis=0), p, atol=0.015)
    again = data.binarize_dynamic(x, np.random.default_rng(0))
    other = data.binarize_dynamic(x, np.random.default_rng(1))
    np.testing.assert_array_equal(out, again)
    assert not np.array_equal(out, other)
    out64 = data.binarize_dynamic(x.astype(np.float64), np.random.default_rng(0))
    assert out64.dtype == np.float64


def test_binarize_dynamic_needs_generator():
    with pytest.raises(ConfigError, match="Generator"):
        data.binarize_dynamic(np.zeros((2, 2)), 0)


def test_train_validation_split():
    x = np.arange(50).reshape(10, 5)
    y = np.arange(10)
    x_tr, y_tr, x_val, y_val = data.train_validation_split(x, y, 3, np.random.default_rng(0))
    assert x_tr.shape == (7, 5) and x_val.shape == (3, 5)
    assert set(y_tr).isdisjoint(y_val) and set(y_tr) | set(y_val) == set(range(10))
    np.testing.assert_array_equal(x_tr[:, 0] // 5, y_tr)  # rows stay with their labels
    np.testing.assert_array_equal(x_val[:, 0] // 5, y_val)
    again = data.train_validation_split(x, y, 3, np.random.default_rng(0))
    np.testing.assert_array_equal(again[3], y_val)


@pytest.mark.parametrize("n_validation", [0, 10, -1, 2.5, True])
def test_train_validation_split_bad_size(n_validation):
    x, y = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(ConfigError, match=f"n_validation.*{n_validation!r}"):
        data.train_validation_split(x, y, n_validation, np.random.default_rng(0))


def test_train_validation_split_length_mismatch():
    with pytest.raises(DataError, match="10 examples but y has 9"):
        data.train_validation_split(np.zeros((10, 2)), np.zeros(9), 2, np.random.default_rng(0))


def test_check_pixels_accepts_good_data():
    data.check_pixels(np.random.default_rng(0).random((4, 6)), "bernoulli")
    data.check_pixels(np.full((2, 3), 7.0), "gaussian")  # no range for other likelihoods


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((2, 2, 2)), "2-D"),
        (np.zeros((2, 2), dtype=np.uint8), "floating"),
        (np.array([[np.nan, 0.0], [np.nan, 1.0]]), "2 NaN and 0 inf"),
        (np.array([[np.inf, -np.inf, 0.5]]), "0 NaN and 2 inf"),
        (np.array([[-0.5, 0.2, 1.5]]), "min -0.5 max 1.5"),
    ],
)
def test_check_pixels_errors(x, match):
    with pytest.raises(DataError, match=match):
        data.check_pixels(x, "bernoulli")


# ---------------------------------------------------------------- batches


@pytest.mark.parametrize("rng", [None, np.random.default_rng(0)])
def test_batches_cover_every_index_once(rng):
    out = list(data.batches(10, 4, rng))
    assert [len(b) for b in out] == [4, 4, 2]
    everything = np.concatenate(out)
    assert sorted(everything.tolist()) == list(range(10))
    if rng is None:
        np.testing.assert_array_equal(everything, np.arange(10))


def test_batches_shuffle_per_call_and_seeded():
    rng = np.random.default_rng(0)
    first, second = (np.concatenate(list(data.batches(100, 10, rng))) for _ in range(2))
    assert not np.array_equal(first, second)
    again = np.concatenate(list(data.batches(100, 10, np.random.default_rng(0))))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("batch_size", [0, -3, 11, 2.0, True])
def test_batches_bad_batch_size(batch_size):
    with pytest.raises(ConfigError, match=f"batch_size.*{batch_size!r}"):
        data.batches(10, batch_size)  # raises at the call, before iteration

