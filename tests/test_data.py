"""The IDX reader's checks, downloads against a server on 127.0.0.1, batches, augmentation."""
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading

import numpy as np
import pytest

from tinygrad_mnist.mnist import data
from tinygrad_mnist.mnist.data import DataError

pytestmark = pytest.mark.slow        # reads whole datasets, serves downloads (pytest -m "not slow" skips it)


def write_idx(path, array, magic=None, gz=True, extra=b"", cut=0):
    header = magic if magic is not None else bytes([0, 0, 8, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    body = header + array.astype(np.uint8).tobytes() + extra
    body = body[:len(body) - cut]
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(body)
    return path


def make_dataset_dir(directory, n_train=6, n_test=4, labels_max=9):
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{split}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz",
                  np.minimum(np.arange(n), labels_max))
    return directory


def test_reads_gzip_and_raw_files(tmp_path):
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "a.gz", a)), a)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "a", a, gz=False)), a)


def test_reads_the_shared_mnist_copy(mnist_dir):
    ds = data.load("mnist", data_dir=mnist_dir)
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert np.bincount(ds.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                    974, 1009]
    x = ds.normalized(ds.train_images[:20000])
    assert x.dtype == np.float32 and x.shape == (20000, 784)
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02     # standardized the usual way


@pytest.mark.parametrize("kind, kwargs, message", [
    ("wrong magic", dict(magic=b"\x00\x00\x09\x03"), "magic number"),
    ("not idx at all", dict(magic=b"PK\x03\x04"), "magic number"),
    ("truncated", dict(cut=5), "truncated"),
    ("trailing data", dict(extra=b"\x00\x01"), "trailing"),
])
def test_malformed_files_name_the_file(tmp_path, kind, kwargs, message):
    path = write_idx(tmp_path / "bad-idx.gz", np.zeros((3, 28, 28)), **kwargs)
    with pytest.raises(DataError, match=f"bad-idx.gz.*{message}"):
        data.read_idx(path)


def test_oversized_header_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + (2 ** 31 - 1).to_bytes(4, "big") * 3 + b"\0" * 10)
    with pytest.raises(DataError, match="huge.gz.*too large"):
        data.read_idx(path)


def test_truncated_gzip_stream_and_header(tmp_path):
    good = write_idx(tmp_path / "good.gz", np.zeros((3, 28, 28)))
    broken = tmp_path / "broken.gz"
    broken.write_bytes(good.read_bytes()[:30])
    with pytest.raises(DataError, match="broken.gz"):
        data.read_idx(broken)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="short.*truncated header"):
        data.read_idx(short)


def test_a_damaged_deflate_stream_is_one_line_naming_the_file(tmp_path):
    """Bytes flipped inside the compressed data (header and length intact): zlib's own error
    became a 20-frame traceback."""
    good = write_idx(tmp_path / "good.gz", (np.arange(30 * 28 * 28) % 7).reshape(30, 28, 28))
    raw = bytearray(good.read_bytes())
    raw[20] ^= 0xFF                  # the deflate block's code lengths: zlib.error, not a CRC
    damaged = tmp_path / "damaged.gz"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="damaged.gz: cannot be read .*truncated or corrupt"):
        data.read_idx(damaged)


def test_wrong_dimension_count_labels_range_and_lengths(tmp_path):
    d = make_dataset_dir(tmp_path / "ok")
    assert len(data.read_directory(d, data.DATASETS["mnist"]).train_labels) == 6

    d = make_dataset_dir(tmp_path / "labels")
    write_idx(d / "train-labels-idx1-ubyte.gz", np.array([0, 1, 12, 3, 4, 5]))
    with pytest.raises(DataError, match="train-labels.*label 12 is out of range"):
        data.read_directory(d, data.DATASETS["mnist"])

    d = make_dataset_dir(tmp_path / "count")
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.arange(3))
    with pytest.raises(DataError, match="test split has 4 images but 3 labels"):
        data.read_directory(d, data.DATASETS["mnist"])

    d = make_dataset_dir(tmp_path / "ndim")
    write_idx(d / "train-images-idx3-ubyte.gz", np.zeros((6, 784)))
    with pytest.raises(DataError, match="train-images.*2 dimensions, expected 3"):
        data.read_directory(d, data.DATASETS["mnist"])

    d = make_dataset_dir(tmp_path / "missing")
    os.unlink(d / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="t10k-images.*not found"):
        data.read_directory(d, data.DATASETS["mnist"])


# ---------------------------------------------------------------- downloads on loopback

class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; yields its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()
    httpd.server_close()


def dead_url():
    """A loopback URL where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_good_file_is_verified_and_cached(server, tmp_path):
    url, root = server
    source = make_dataset_dir(root)
    files = {name: md5(source / name) for name in data.FILES.values()}
    cache = tmp_path / "cache"
    data.download(files, [url], cache, progress=False)
    for name in files:
        assert md5(cache / name) == files[name]
    ds = data.read_directory(cache, data.DATASETS["mnist"])
    assert ds.train_images.shape == (6, 28, 28)
    for name in files:                      # cached: a second call fetches nothing
        (root / name).unlink()
    data.download(files, [url], cache, progress=False)


def test_corrupt_download_leaves_nothing_and_says_why(server, tmp_path):
    url, root = server
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"corrupted bytes")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="train-labels.*checksum mismatch"):
        data.download({"train-labels-idx1-ubyte.gz": "0" * 32}, [url], cache, progress=False)
    assert not cache.exists()               # no partial or temporary file, no empty folder


def test_server_down_then_second_mirror(server, tmp_path):
    url, root = server
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    expected = md5(root / "t10k-labels-idx1-ubyte.gz")
    cache = tmp_path / "cache"
    data.download({"t10k-labels-idx1-ubyte.gz": expected}, [dead_url(), url], cache,
                  progress=False)
    assert md5(cache / "t10k-labels-idx1-ubyte.gz") == expected


def test_every_mirror_failing_lists_each_failure(server, tmp_path):
    url, _ = server
    down = dead_url()
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        data.download({"t10k-labels-idx1-ubyte.gz": "0" * 32}, [down, url], cache,
                      progress=False)
    message = str(info.value)
    assert down in message and url in message and "404" in message
    assert "--data-dir" in message            # what to do without internet
    assert not cache.exists()


def test_load_downloads_into_the_cache_from_the_environment(server, tmp_path, monkeypatch):
    url, root = server
    source = make_dataset_dir(root)
    info = data.DatasetInfo("tiny", (url,), {n: md5(source / n) for n in data.FILES.values()},
                            0.5, 0.5, tuple("0123456789"), (1000,) * 10)
    monkeypatch.setitem(data.DATASETS, "tiny", info)
    monkeypatch.setenv("TINYGRAD_MNIST_CACHE", str(tmp_path / "cache-root"))
    ds = data.load("tiny", progress=False)
    assert len(ds.test_labels) == 4
    assert (tmp_path / "cache-root" / "tiny" / "t10k-images-idx3-ubyte.gz").exists()
    # a corrupted cache file is noticed by its checksum and fetched again
    (tmp_path / "cache-root" / "tiny" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    assert len(data.load("tiny", progress=False).test_labels) == 4


# ---------------------------------------------------------------- batches and augmentation

def test_batches_cover_every_index_once_in_seeded_order():
    got = list(data.batches(10, 4, np.random.default_rng(5)))
    assert [len(b) for b in got] == [4, 4, 2]
    assert sorted(np.concatenate(got).tolist()) == list(range(10))
    again = list(data.batches(10, 4, np.random.default_rng(5)))
    assert all((a == b).all() for a, b in zip(got, again))


def test_augment_shapes_determinism_and_identity(mnist_dir):
    images = data.read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:32] / np.float32(255)
    a = data.augment(images, np.random.default_rng(7))
    b = data.augment(images, np.random.default_rng(7))
    assert a.shape == (32, 28, 28) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)                            # same seed, same batch
    assert not np.array_equal(a, data.augment(images, np.random.default_rng(8)))
    assert not np.array_equal(a, images)
    assert a.min() >= 0 and a.max() <= 1 + 1e-6
    same = data.augment(images, np.random.default_rng(0), max_shift=0, max_degrees=0)
    np.testing.assert_allclose(same, images, atol=1e-6)


class _FixedDraws:
    """Stands in for a Generator: rotation 0, shift (1, -2) pixels."""
    def uniform(self, low, high, size):
        if len(size) == 3:
            return np.zeros(size)
        out = np.zeros(size)
        out[0], out[1] = 1.0, -2.0
        return out


def test_augment_integer_shift_moves_pixels_exactly():
    images = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)
    out = data.augment(images, _FixedDraws())
    np.testing.assert_allclose(out[:, 1:, :-2], images[:, :-1, 2:], atol=1e-6)
    assert np.all(out[:, 0, :] == 0) and np.all(out[:, :, -2:] == 0)


def test_augment_keeps_digits_recognizable(mnist_dir):
    """Labels are preserved in the sense that matters: a model trained without augmentation
    still reads most augmented test digits as their own label."""
    from tinygrad_mnist import Tensor, nn, optim, manual_seed
    ds = data.load("mnist", data_dir=mnist_dir)
    manual_seed(0)
    model = nn.MLP([784, 128, 10])
    opt = optim.Adam(model.parameters(), lr=2e-3)
    x, y = ds.normalized(ds.train_images[:10000]), ds.train_labels[:10000].astype(int)
    for epoch in range(3):
        for idx in data.batches(len(x), 100, np.random.default_rng(epoch)):
            opt.zero_grad()
            nn.cross_entropy(model(Tensor(x[idx])), y[idx]).backward()
            opt.step()
    pixels = data.to_unit(ds.test_images[:2000])
    moved = data.augment(pixels, np.random.default_rng(1))
    info = ds.info
    acc_plain = (model(Tensor(data.standardize(pixels, info))).data.argmax(1)
                 == ds.test_labels[:2000]).mean()
    acc_moved = (model(Tensor(data.standardize(moved, info))).data.argmax(1)
                 == ds.test_labels[:2000]).mean()
    assert acc_plain > 0.9 and acc_moved > 0.6, (acc_plain, acc_moved)


def test_elastic_distortion_keeps_a_strokes_mass_and_place():
    """A drawn stroke (a bar of ones, 3 px wide, 14 long) moved by elastic distortions at
    Simard's strength: its ink (the sum of pixels) is kept on average, as a displacement field
    of mean zero keeps area, and its centre of mass stays within a few pixels, so the digit it
    belongs to stays where it was."""
    stroke = np.zeros((1, 28, 28), np.float32)
    stroke[0, 7:21, 13:16] = 1.0
    rng = np.random.default_rng(0)
    moved = np.concatenate([data.augment(stroke, rng, max_shift=0, max_degrees=0, elastic=34)
                            for _ in range(200)])
    masses = moved.sum(axis=(1, 2)) / stroke.sum()
    assert masses.mean() == pytest.approx(1.0, abs=0.03)          # each draw: 0.5 to 2
    assert 0.4 < masses.min() and masses.max() < 2.5
    ys, xs = np.mgrid[0:28, 0:28]
    centres = [((m * ys).sum() / m.sum(), (m * xs).sum() / m.sum()) for m in moved]
    shift = np.hypot(*(np.array(centres) - [13.5, 14.0]).T)
    assert np.median(shift) < 2.0 and shift.max() < 4.0
    assert ((moved >= -1e-6) & (moved <= 1 + 1e-6)).all()       # still pixels in [0, 1]


def test_flip_mirrors_about_half_the_images_exactly_and_moves_nothing_else():
    rng = np.random.default_rng(0)
    images = rng.random((64, 28, 28)).astype(np.float32)       # no image is its own mirror
    out = data.augment(images, np.random.default_rng(1), max_shift=0, max_degrees=0,
                       flip=True)
    mirrored = [np.allclose(o, i[:, ::-1], atol=1e-6) for o, i in zip(out, images)]
    kept = [np.allclose(o, i, atol=1e-6) for o, i in zip(out, images)]
    assert all(m != k for m, k in zip(mirrored, kept))        # each one or the other, exactly
    assert 20 <= sum(mirrored) <= 44                            # about half (p = 0.5, n = 64)
    same = data.augment(images, np.random.default_rng(1), max_shift=0, max_degrees=0)
    np.testing.assert_array_equal(same, images)               # without flip: untouched


def test_a_damaged_compressed_npz_is_one_line_naming_the_file(tmp_path):
    from tinygrad_mnist import nn
    path = tmp_path / "model.npz"
    np.savez_compressed(path, w=np.random.default_rng(0).integers(0, 4, 20000, dtype=np.uint8))
    raw = bytearray(path.read_bytes())
    start = raw.index(b"w.npy") + len(b"w.npy")          # the member's deflate data
    for i in range(start + 100, start + 120):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="model.npz' as a NumPy .npz of plain arrays"):
        nn.load_arrays(path)
