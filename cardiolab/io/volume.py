"""The "volume" layout: whole-heart 3D images with six labelled structures (CT or MR, no time axis).

On disk:

    ROOT/labels.json                 {"0": "background", "1": "aorta", ..., "6": "RV"}
    ROOT/<id>/<id>_image.nii.gz      (X, Y, Z) float32, zooms (sx, sy, sz) mm
    ROOT/<id>/<id>_mask.nii.gz       (X, Y, Z) uint8 labels 0-6, same shape and affine as the image

The cine layouts (acdc, mnms) hold 4D short-axis studies with labels 0-3; this one has its own label set
(after MedLoRD's six conditioning masks), so it is its own layout with its own checks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Label values and names; the order of MedLoRD's conditioning masks.
LABELS = {0: "background", 1: "aorta", 2: "LA", 3: "RA", 4: "myocardium", 5: "LV", 6: "RV"}
VALID_LABELS = tuple(LABELS)


@dataclass
class VolumeSubject:
    """One whole-heart volume.

    image:  (X, Y, Z) float32, intensities in [-1, 1] for phantoms and samples (real CT: whatever is stored).
    mask:   (X, Y, Z) uint8, values in VALID_LABELS.
    affine: (4, 4) voxel -> world (mm).
    """

    id: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(sx, sy, sz) in mm, from the affine's column norms."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
