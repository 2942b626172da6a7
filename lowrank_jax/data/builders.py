"""TFDS builders of the offline datasets, written as array_record (no TensorFlow).

Each builder prepares its files once into ``data_dir`` (with TFDS's progress
bars) and is reused afterwards; ``pipeline`` reads them with
``as_data_source`` through grain. Importing this module registers the builders
with TFDS, so only ``pipeline`` imports it, when a run needs real data.
"""

from __future__ import annotations

from typing import ClassVar

import tensorflow_datasets as tfds

from lowrank_jax.data import listops


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


BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "listops": Listops,
    "listops_small": ListopsSmall,
}
