"""Data: image and table readers, Glow's preprocessing, the bundled Fashion-MNIST subset, grids."""

from flowkit.data.augment import augment_images, random_flip, random_shift
from flowkit.data.base import DataError, ImageData, split_images
from flowkit.data.bundled import FASHION_MNIST_CLASSES, load_bundled
from flowkit.data.cifar import read_cifar10, read_cifar100
from flowkit.data.dataset import ImageDataset
from flowkit.data.folder import IMAGE_EXTENSIONS, read_image_folder
from flowkit.data.grid import make_grid, save_image_grid
from flowkit.data.idx import read_idx, read_idx_array, read_idx_dir
from flowkit.data.imagenet import read_imagenet_npz
from flowkit.data.loading import dataset_splits, has_test_split, load_dataset, same_source
from flowkit.data.tables import (
    TABLE_SUFFIXES,
    Standardization,
    Table,
    check_same_columns,
    read_table,
    split_table,
    write_table,
)
from flowkit.data.toy import (
    KnownMixture,
    checkerboard,
    eight_gaussians,
    eight_gaussians_mixture,
    gaussian_mixture_10d,
    mixture_10d,
    two_moons,
)
from flowkit.data.transforms import n_bins, reduce_bits, to_model_input, to_uint8

__all__ = [
    "augment_images",
    "random_flip",
    "random_shift",
    "IMAGE_EXTENSIONS",
    "DataError",
    "FASHION_MNIST_CLASSES",
    "TABLE_SUFFIXES",
    "ImageData",
    "ImageDataset",
    "KnownMixture",
    "Standardization",
    "Table",
    "check_same_columns",
    "checkerboard",
    "dataset_splits",
    "eight_gaussians",
    "eight_gaussians_mixture",
    "gaussian_mixture_10d",
    "mixture_10d",
    "two_moons",
    "has_test_split",
    "load_bundled",
    "load_dataset",
    "make_grid",
    "n_bins",
    "read_cifar10",
    "read_cifar100",
    "read_idx",
    "read_idx_array",
    "read_idx_dir",
    "read_image_folder",
    "read_imagenet_npz",
    "read_table",
    "reduce_bits",
    "same_source",
    "save_image_grid",
    "split_images",
    "split_table",
    "to_model_input",
    "to_uint8",
    "write_table",
]
