"""Small copies of CIFAR-10, CelebA and an image folder in the on-disk layouts torchvision reads."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def cifar10(root: Path, per_batch: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-py/``: five training batches, a test batch and the meta file (pickles of
    uint8 rows [N, 3072], channel-major, and labels), as the real archive unpacks."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels}))
        out[name] = data
        out[name + "_labels"] = np.array(labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return out


def celeba(root: Path, partition: tuple[int, int, int] = (8, 3, 4), seed: int = 0) -> Path:
    """``root/celeba/``: img_align_celeba/*.jpg (178 x 218 faces) and the five list files torchvision reads,
    with ``partition`` training / validation / test images."""
    rng = np.random.default_rng(seed)
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names, splits = [], []
    for split, count in enumerate(partition):
        for _ in range(count):
            name = f"{len(names) + 1:06d}.jpg"
            face = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)
            face[25:195, 5:175] = rng.integers(0, 256, 3)  # flat around the 148-pixel center crop (rows 35-183)
            Image.fromarray(face).save(folder / "img_align_celeba" / name, quality=95)
            names.append(name)
            splits.append(split)
    attrs = [f"Attr{i}" for i in range(40)]
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {s}\n" for n, s in zip(names, splits)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} {i % 3 + 1}\n" for i, n in enumerate(names)))
    (folder / "list_attr_celeba.txt").write_text(f"{len(names)}\n{' '.join(attrs)}\n" + "".join(
        f"{n} " + " ".join(str(v) for v in rng.choice([-1, 1], 40)) + "\n" for n in names))
    (folder / "list_bbox_celeba.txt").write_text(f"{len(names)}\nimage_id x_1 y_1 width height\n" + "".join(
        f"{n} 10 20 100 120\n" for n in names))
    marks = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (folder / "list_landmarks_align_celeba.txt").write_text(f"{len(names)}\n{marks}\n" + "".join(
        f"{n} 69 109 106 113 77 142 73 152 108 154\n" for n in names))
    return folder


def image_folder(root: Path, classes: tuple[str, ...] = ("cats", "dogs"), per_class: int = 5, seed: int = 0) -> Path:
    """PNGs of varied sizes in one sub-folder per class (no sub-folders when ``classes`` is empty: flat)."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes or ("",)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (int(rng.integers(20, 40)), int(rng.integers(20, 40)))
            pixels = np.full((*size, 3), 40 + 80 * c, dtype=np.uint8) + rng.integers(0, 20, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def trust_checksums(monkeypatch) -> None:
    """torchvision checks the md5 of every file against the real archives'; a fixture's cannot match."""
    import torchvision.datasets.celeba
    import torchvision.datasets.cifar

    for module in (torchvision.datasets.cifar, torchvision.datasets.celeba):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)
