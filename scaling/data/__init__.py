"""Datasets and the input pipeline: the synthetic language, text folders, TFDS, grain batches."""

from scaling.data.pipeline import (
    BatchSource,
    DataInfo,
    data_info,
    default_config,
    default_data_dir,
    make_batches,
)
from scaling.data.synthetic import SyntheticLanguage, SyntheticSpec

__all__ = [
    "BatchSource",
    "DataInfo",
    "SyntheticLanguage",
    "SyntheticSpec",
    "data_info",
    "default_config",
    "default_data_dir",
    "make_batches",
]
