"""Safe NIfTI reading: every way a file can be broken becomes a CardiolabError naming the file.

nibabel reads lazily, so a truncated .nii.gz passes `nib.load` (the header is intact) and only fails
when the voxels are read; `load_nifti` reads them at once so the error surfaces here, with the path.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from cardiolab.core import CardiolabError, atomic_path

# What nibabel, gzip and numpy raise on unreadable, truncated or garbled files (gzip.BadGzipFile is an OSError).
READ_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error, struct.error)


class NiftiError(CardiolabError):
    """A NIfTI file that cannot be used; `path` and `reason` are kept apart for validation reports."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class Volume:
    """A NIfTI file read into memory.

    data:   as stored, (X, Y, Z) or (X, Y, Z, T); float32 unless another dtype was asked for.
    affine: (4, 4) voxel -> world (mm) of the spatial axes.
    zooms:  voxel sizes from the header, (sx, sy, sz[, frame_ms]).
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, ...]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[:3])


def load_nifti(path: str | os.PathLike, ndim: int | None = None, dtype=np.float32) -> Volume:
    """Read a whole NIfTI file; raise NiftiError (a CardiolabError) naming `path` on any failure.

    ndim: the expected number of dimensions (3 or 4); trailing singleton axes beyond it are dropped,
          since some tools write a (X, Y, Z, T, 1) series.
    dtype: numpy dtype of `data` (None keeps what the file stores after scaling).
    """
    path = Path(path)
    if not path.is_file():
        raise NiftiError(path, "file not found")
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj) if dtype is None else np.asarray(img.dataobj, dtype=dtype)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        affine = _affine(img, zooms[:3])
    except READ_ERRORS as e:
        detail = str(e).replace(str(path), path.name)  # the path leads the message already
        raise NiftiError(path, f"unreadable NIfTI ({type(e).__name__}: {detail})") from None
    if ndim is not None:
        while data.ndim > ndim and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != ndim:
            raise NiftiError(path, f"expected a {ndim}D image, got {data.ndim}D with shape {tuple(data.shape)}")
    if 0 in data.shape:
        raise NiftiError(path, f"empty image, shape {tuple(data.shape)}")
    if not all(np.isfinite(z) and z > 0 for z in zooms[:3]):
        raise NiftiError(path, f"voxel sizes must be positive, header has {zooms[:3]}")
    if not np.all(np.isfinite(affine)):
        raise NiftiError(path, "affine has NaN/Inf entries")
    return Volume(path=path, data=data, affine=affine, zooms=zooms)


def save_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, frame_ms: float | None = None) -> Path:
    """Write `array` (X, Y, Z) or (X, Y, Z, T) with `affine` (4, 4) atomically; returns `path`.

    Zooms come from the affine's column norms (plus frame_ms for 4D); qform and sform both hold the affine,
    so every reader (nibabel, ITK, load_nifti) sees the same geometry.
    """
    img = nib.Nifti1Image(array, affine)
    zooms = [float(z) for z in np.linalg.norm(affine[:3, :3], axis=0)]
    if array.ndim == 4:
        zooms.append(float(frame_ms if frame_ms is not None else 1.0))
        img.header.set_xyzt_units("mm", "msec")
    else:
        img.header.set_xyzt_units("mm")
    img.header.set_zooms(zooms[: array.ndim])
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def _affine(img, zooms: tuple[float, ...]) -> np.ndarray:
    """The voxel -> mm affine, trusting the voxel sizes in the header (pixdim).

    ACDC stores an sform without voxel scaling beside a correct qform (MIC-DKFZ/nnUNet#2741); nibabel
    prefers the sform, which would make every voxel 1 mm wide. When the affine disagrees with pixdim,
    take the qform if it agrees, else rescale the affine's columns to pixdim.
    """
    affine = np.asarray(img.affine, dtype=np.float64)
    zooms = np.asarray(zooms, dtype=np.float64)

    def agrees(a: np.ndarray) -> bool:
        return np.allclose(np.linalg.norm(a[:3, :3], axis=0), zooms, rtol=1e-3)

    if agrees(affine) or not np.all(zooms > 0):
        return affine
    qform, code = img.header.get_qform(coded=True) if hasattr(img.header, "get_qform") else (None, 0)
    if code and qform is not None and agrees(qform):
        return np.asarray(qform, dtype=np.float64)
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    fixed = affine.copy()
    fixed[:3, :3] = affine[:3, :3] / np.where(norms > 0, norms, 1.0) * zooms
    return fixed
