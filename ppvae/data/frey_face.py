"""Frey Face: 1,965 grey images of one face, 28 rows x 20 columns, no labels."""

from __future__ import annotations

import numpy as np

from ppvae import registry
from ppvae.data.dataset import Arrays, DataSource
from ppvae.data.files import check_md5, data_root, download, missing_files_error
from ppvae.errors import DataError

URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
MD5 = "5aeb024d42b8a6091f30e5eb18c8a48d"


@registry.register("dataset", "frey_face")
class FreyFace(DataSource):
    """Frey Face (frey_rawface.mat: 1,965 images of 28 x 20), split at random by test_fraction."""

    def arrays(self) -> Arrays:
        from scipy.io import loadmat

        root = data_root(self.data_dir)
        path = root / "frey_rawface.mat"
        if not path.is_file():
            failure = download([URL], root, path.name, MD5) if self.download else None
            if failure or not self.download:
                raise missing_files_error("Frey Face", root, [path.name], self.download, failure, URL)
        check_md5(path, MD5)
        try:
            ff = loadmat(path)["ff"]
        except Exception as e:
            raise DataError(f"Cannot read variable 'ff' from {path} ({e}); delete it and download it again.") from e
        if ff.shape != (560, 1965):
            raise DataError(f"{path}: 'ff' has shape {ff.shape}, expected (560, 1965).")
        # Column i is image i in row-major 28x20 order, so rows of ff.T are flat upright images.
        x = np.ascontiguousarray(ff.T).astype(np.float32) / 255.0
        return (*self.split(x, None), (1, 28, 20), 0)
