"""pf.data: datasets as arrays, a DataLoader that batches them, augmentations and scaling.

Everything here needs NumPy only; scikit-learn (for ``datasets.digits`` and
``datasets.breast_cancer``) and CuPy (for ``DataLoader(device="cuda")``) load on first use.
"""

from . import datasets, transforms
from .dataset import ArrayDataset
from .loader import DataLoader
from .preprocess import MinMaxScale, Standardise, normalise, standardise
from .sampler import DistributedSampler
from .transforms import (Compose, GaussianNoise, RandomCrop, RandomHorizontalFlip,
                         RandomVerticalFlip)

__all__ = ["ArrayDataset", "DataLoader", "DistributedSampler", "datasets", "transforms",
           "Standardise", "MinMaxScale", "standardise", "normalise", "Compose", "RandomHorizontalFlip",
           "RandomVerticalFlip", "RandomCrop", "GaussianNoise"]
