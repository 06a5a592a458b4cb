"""A folder of images (real, labelled data for DDIM inversion), read in sorted file-name order:
sample i is the i-th file, so a label file by index (`dg_jax.data.label_file`) labels it."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from dg_jax.data.images import square_resize
from dg_jax.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageFolder:
    """`folder`'s images (not its subfolders), centre-cropped and resized to size x size."""

    def __init__(self, folder, size: int):
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            raise UserError(f"image folder {folder} does not exist")
        self.files = sorted(f for f in folder.iterdir() if f.suffix.lower() in SUFFIXES)
        if not self.files:
            raise UserError(f"image folder {folder} holds no {'/'.join(SUFFIXES)} images")
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def load(self, indices) -> np.ndarray:
        """indices [B] -> uint8 [B, size, size, 3]."""
        out = []
        for i in indices:
            try:
                with Image.open(self.files[i]) as image:
                    out.append(square_resize(np.asarray(image.convert("RGB")), self.size))
            except OSError as e:
                raise UserError(f"cannot read image {self.files[i]}: {e}") from None
        return np.stack(out)
