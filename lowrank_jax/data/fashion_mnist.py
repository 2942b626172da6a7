"""Sequential Fashion-MNIST: the stand-in for LRA "Image" (CIFAR-10 is not installable here).

Each 28x28 image is a sequence of 784 pixel intensities (vocabulary 256), with
10 classes, 60k train / 10k test, read from the IDX files of Debian's
``dataset-fashion-mnist`` package (or any folder holding the same four files).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from lowrank_jax.config import ConfigError

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
VOCAB_SIZE, NUM_CLASSES, LENGTH = 256, 10, 784


def check_source(source_dir: str | None) -> Path:
    """The folder with the four IDX files, or ``ConfigError`` saying how to get them."""
    folder = Path(source_dir or DEFAULT_DIR)
    missing = [name for pair in FILES.values() for name in pair if not (folder / name).exists()]
    if missing:
        raise ConfigError(
            f"data.source_dir: {folder} lacks the Fashion-MNIST IDX files ({missing[0]}, ...); "
            "install them with `apt-get install dataset-fashion-mnist` (Debian, as root) "
            "or point data.source_dir at a folder holding them"
        )
    return folder


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (gzip-compressed, unsigned bytes)."""
    with gzip.open(path, "rb") as f:
        zero, dtype, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype != 0x08:
            raise ValueError(f"{path}: not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        return np.frombuffer(f.read(), np.uint8).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte array as a gzip-compressed IDX file (e.g. a test-size copy)."""
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.asarray(array, np.uint8).tobytes())


def load(split: str, source_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 [n, 784], labels uint8 [n]) of ``split`` (train | test)."""
    folder = check_source(source_dir)
    images, labels = (read_idx(folder / name) for name in FILES[split])
    return images.reshape(len(images), LENGTH), labels
