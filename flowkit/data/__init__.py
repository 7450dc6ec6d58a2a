"""Image datasets: readers for CIFAR, idx, downsampled ImageNet and image folders."""

from flowkit.data.base import DataError, ImageData
from flowkit.data.cifar import read_cifar10, read_cifar100
from flowkit.data.folder import IMAGE_EXTENSIONS, read_image_folder
from flowkit.data.idx import read_idx, read_idx_array, read_idx_dir
from flowkit.data.imagenet import read_imagenet_npz

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "ImageData",
    "read_cifar10",
    "read_cifar100",
    "read_idx",
    "read_idx_array",
    "read_idx_dir",
    "read_image_folder",
    "read_imagenet_npz",
]
