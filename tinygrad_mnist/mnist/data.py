"""MNIST and Fashion-MNIST: a validating IDX reader, verified downloads, batches, augmentation."""
import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    mirrors: tuple      # base URLs, tried in turn
    md5: dict           # file name -> MD5 of the official .gz
    mean: float         # of the training pixels scaled to [0, 1]
    std: float
    classes: tuple
    test_label_counts: tuple   # images per class in the official test split: a fingerprint
    image_shape: tuple = (28, 28)
    train_size: int = 60_000   # images in the official training split
    test_size: int = 10_000

    @property
    def pixels(self):
        return self.image_shape[0] * self.image_shape[1]


DATASETS = {
    "mnist": DatasetInfo(
        "mnist",
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        0.1307, 0.3081, tuple(str(d) for d in range(10)),
        (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        0.2860, 0.3530, ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"), (1000,) * 10),
}

_MAX_IDX_BYTES = 1 << 31    # far above MNIST's 47 MB: a larger header is a corrupt file


class DataError(ValueError):
    """A data file is missing, malformed or fails its checksum; the message names it."""


# ---------------------------------------------------------------- IDX reader

def _open_maybe_gzip(path):
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path, ndim=None):
    """Read an IDX file (gzip or raw) of unsigned bytes into an array of its stated shape.

    Checks the magic number (0, 0, type 0x08, ndim), that the data is exactly as long as the
    dimensions say, and, if given, the number of dimensions. Raises DataError naming the file.
    """
    try:
        with _open_maybe_gzip(path) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] != 0x08 or magic[3] == 0:
                raise DataError(f"{path}: not an IDX file of unsigned bytes (magic number "
                                f"{magic.hex() or 'missing'}, expected 000008 and a dimension "
                                f"count)")
            file_ndim = magic[3]
            if ndim is not None and file_ndim != ndim:
                raise DataError(f"{path}: has {file_ndim} dimensions, expected {ndim}")
            header = f.read(4 * file_ndim)
            if len(header) < 4 * file_ndim:
                raise DataError(f"{path}: truncated header")
            shape = tuple(int.from_bytes(header[4 * i:4 * i + 4], "big")
                          for i in range(file_ndim))
            expected = int(np.prod(shape, dtype=object))
            if expected > _MAX_IDX_BYTES:
                raise DataError(f"{path}: header claims shape {shape}, {expected} bytes; "
                                f"too large to be an image dataset")
            body = f.read(expected + 1)      # one more byte than needed reveals trailing data
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        if isinstance(error, FileNotFoundError):
            raise DataError(f"{path}: file not found") from None
        raise DataError(f"{path}: cannot be read ({error}); the file is truncated or "
                        f"corrupt") from None
    if len(body) < expected:
        raise DataError(f"{path}: truncated: shape {shape} needs {expected} bytes of data, "
                        f"found {len(body)}")
    if len(body) > expected:
        raise DataError(f"{path}: longer than its header says (shape {shape}): trailing data")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _find_file(directory, name, dataset="mnist"):
    """The file in `directory`, gzipped or not (train-images-idx3-ubyte[.gz]). A directory
    that holds the datasets' folders instead is named with the one to pass."""
    for candidate in (name, name[:-3]):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    inside = sorted(d for d in DATASETS if os.path.exists(os.path.join(directory, d, name)) or
                    os.path.exists(os.path.join(directory, d, name[:-3])))
    if inside:                     # the folder above the datasets' (the one ablate takes)
        where = " and ".join(f"{d}/" for d in inside)
        pick = dataset if dataset in inside else inside[0]
        raise DataError(f"{directory} holds {where}, not the IDX files themselves: pass "
                        f"--data-dir {os.path.join(directory, pick)}")
    raise DataError(f"{os.path.join(directory, name)}: file not found (nor without .gz)")


@dataclass
class Dataset:
    info: DatasetInfo
    test_images: np.ndarray      # (N, 28, 28) uint8
    test_labels: np.ndarray      # (N,) uint8
    train_images: np.ndarray = None     # None when only the test split was asked for
    train_labels: np.ndarray = None

    def normalized(self, images):
        """uint8 images -> float32 (N, 784), scaled to [0, 1] then standardized."""
        return normalize(images, self.info)


def normalize(images, info):
    """uint8 images -> float32 (N, 784), scaled to [0, 1] then standardized."""
    return standardize(to_unit(images), info)


def to_unit(images):
    """uint8 pixels -> float32 in [0, 1]."""
    return images.astype(np.float32) / np.float32(255)


def standardize(pixels, info):
    """(N, 28, 28) or (N, 784) pixels in [0, 1] -> float32 (N, 784) with the training set's
    mean and standard deviation removed, the usual normalization for MNIST."""
    x = pixels.reshape(len(pixels), -1)
    return ((x - np.float32(info.mean)) / np.float32(info.std)).astype(np.float32, copy=False)


def read_directory(directory, info, splits=("train", "test")):
    """Read and validate the files of the given splits of a dataset in `directory` (no
    checksum: a user's copy may be recompressed), and check that the test labels are those of
    `info`'s dataset and not another's."""
    arrays = {}
    for key, name in FILES.items():
        if key.split("_")[0] not in splits:
            continue
        path = _find_file(directory, name, info.name)
        arrays[key] = read_idx(path, ndim=3 if key.endswith("images") else 1)
        if key.endswith("images") and arrays[key].shape[1:] != (28, 28):
            raise DataError(f"{path}: images are {arrays[key].shape[1:]}, expected (28, 28)")
        if key.endswith("labels") and arrays[key].size and arrays[key].max() >= len(info.classes):
            raise DataError(f"{path}: label {arrays[key].max()} is out of range for "
                            f"{len(info.classes)} classes")
    for split in splits:
        n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise DataError(f"{directory}: {split} split has {n_images} images but "
                            f"{n_labels} labels")
    if "test" in splits:
        _check_fingerprint(directory, info, arrays["test_labels"])
    return Dataset(info, **arrays)


def _check_fingerprint(directory, info, test_labels):
    """A full test split whose class counts are another dataset's is that dataset: training on
    it under this one's class names would be silently wrong."""
    if len(test_labels) != sum(info.test_label_counts):
        return                                  # a partial or home-made copy: nothing to compare
    counts = tuple(int(n) for n in np.bincount(test_labels, minlength=len(info.classes)))
    if counts == info.test_label_counts:
        return
    other = [d.name for d in DATASETS.values() if d.test_label_counts == counts]
    looks = f"it holds {other[0]}" if other else "its test labels match no known dataset"
    raise DataError(f"{directory}: is not {info.name}: {looks} (test images per class "
                    f"{counts}); pass the {info.name} files or --dataset "
                    f"{other[0] if other else info.name}")


# ---------------------------------------------------------------- downloads

def default_cache_dir(name):
    root = os.environ.get("TINYGRAD_MNIST_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "tinygrad_mnist")
    return os.path.join(root, name)


def md5_of(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url, destination, expected_md5, progress):
    """Stream url to a temporary file beside `destination`, check its MD5, then rename it into
    place. On any failure nothing is left behind and the error says what failed."""
    directory = os.path.dirname(destination)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            digest = hashlib.md5()
            bar = _progress_bar(total, os.path.basename(destination), progress)
            try:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            finally:
                bar.close()
        if digest.hexdigest() != expected_md5:
            raise DataError(f"{url}: checksum mismatch (MD5 {digest.hexdigest()}, expected "
                            f"{expected_md5})")
        os.replace(tmp, destination)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _progress_bar(total, name, enabled):
    from .console import progress_bar
    return progress_bar(total, f"download {name}", "B", enabled, unit_scale=True)


def download(files_md5, mirrors, directory, progress=True):
    """Make sure every file of `files_md5` is in `directory` with its MD5, downloading what is
    missing or wrong from each mirror in turn. Raises DataError listing every failed attempt;
    a directory it created stays only if a file arrived in it."""
    created = not os.path.isdir(directory)
    os.makedirs(directory, exist_ok=True)
    try:
        _download_each(files_md5, mirrors, directory, progress)
    except BaseException:
        if created and not os.listdir(directory):
            os.rmdir(directory)
        raise


def _download_each(files_md5, mirrors, directory, progress):
    for name, expected in files_md5.items():
        path = os.path.join(directory, name)
        if os.path.exists(path) and md5_of(path) == expected:
            continue
        failures = []
        for base in mirrors:
            url = base + name
            try:
                _fetch(url, path, expected, progress)
                break
            except DataError as error:
                failures.append(str(error))
            except urllib.error.HTTPError as error:
                failures.append(f"{url}: HTTP {error.code} {error.reason}")
            except (urllib.error.URLError, OSError, ValueError) as error:
                failures.append(f"{url}: {getattr(error, 'reason', error)}")
        else:
            raise DataError(f"could not download {name} ({'; '.join(failures)}); without "
                            f"internet, pass --data-dir DIR with the IDX files "
                            f"{', '.join(files_md5)} (gzipped or not)")


def load(name="mnist", data_dir=None, cache_dir=None, progress=True, splits=("train", "test")):
    """The dataset `name` (only the given splits). With data_dir, the files are read after
    structural validation (a user's copy may be recompressed, so no checksum). Otherwise they
    come from the cache, downloaded and verified against the official checksums on first use."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    info = DATASETS[name]
    if data_dir:                                     # '' asks for the download cache too
        return read_directory(data_dir, info, splits)
    directory = cache_dir or default_cache_dir(name)
    needed = {f: info.md5[f] for key, f in FILES.items() if key.split("_")[0] in splits}
    download(needed, info.mirrors, directory, progress)
    return read_directory(directory, info, splits)


# ---------------------------------------------------------------- batches and augmentation

def batches(n, batch_size, rng):
    """Index arrays covering range(n) in a random order, batch_size at a time."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


_CENTRE = 13.5                                    # the middle of a 28-pixel axis
_GRID_Y, _GRID_X = np.mgrid[0:28, 0:28].astype(np.float32) - _CENTRE


def smoothing_matrix(sigma, n=28):
    """G with G @ field @ G.T a Gaussian blur (std sigma pixels) of an n x n field; each row
    sums to 1, so the border is averaged over the pixels there are (no fading to zero)."""
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def augment(images, rng, max_shift=2.0, max_degrees=10.0, elastic=0.0, sigma=4.0, flip=False):
    """Random rotation (up to max_degrees) and translation (up to max_shift pixels) of a batch
    of (B, 28, 28) images in [0, 1], with bilinear interpolation and zero fill, vectorized over
    the batch. Labels are unchanged by construction.

    elastic > 0 adds Simard et al. 2003's elastic distortion: a field of uniform(-1, 1)
    displacements per pixel, smoothed by a Gaussian of std `sigma` and scaled by `elastic`
    (their alpha; 34 with sigma 4 in the paper), moves each source point; two matrix products
    per image do the smoothing (G @ field @ G.T), so the batch needs no Python loop.

    flip mirrors a random half of the images left to right (for clothes, not digits)."""
    b = len(images)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=(b, 1, 1)))
    shift_y, shift_x = rng.uniform(-max_shift, max_shift, size=(2, b, 1, 1)).astype(np.float32)
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    # inverse map: for each output pixel, where it came from in the input
    dy, dx = _GRID_Y - shift_y, _GRID_X - shift_x
    src_y = cos * dy + sin * dx + _CENTRE
    src_x = -sin * dy + cos * dx + _CENTRE
    if elastic:
        smooth = smoothing_matrix(sigma)
        field = rng.uniform(-1, 1, size=(2, b, 28, 28)).astype(np.float32)
        field = smooth @ field @ smooth.T * np.float32(elastic)
        src_y, src_x = src_y + field[0], src_x + field[1]
    if flip:                         # drawn last: the other draws stay those of a run without
        mirrored = rng.random((b, 1, 1)) < 0.5
        src_x = np.where(mirrored, 2 * _CENTRE - src_x, src_x)
    y0, x0 = np.floor(src_y), np.floor(src_x)
    wy, wx = src_y - y0, src_x - x0
    # two rows and columns of zeros around each image: a source outside reads 0, and after
    # clipping the four neighbours of any source are at +0, +1, +32 and +33 in the flat array
    padded = np.zeros((b, 32, 32), dtype=np.float32)
    padded[:, 2:30, 2:30] = images
    flat = padded.reshape(-1)
    yi = np.clip(y0, -2, 28).astype(np.intp) + 2
    xi = np.clip(x0, -2, 28).astype(np.intp) + 2
    corner = yi * 32 + xi + np.arange(b).reshape(b, 1, 1) * 1024
    top = flat[corner] * (1 - wx) + flat[corner + 1] * wx
    bottom = flat[corner + 32] * (1 - wx) + flat[corner + 33] * wx
    return top * (1 - wy) + bottom * wy
