"""RVIP augmentation (cardiolab.data.landmark_transforms): targets move with the image."""
from __future__ import annotations

import math

import numpy as np
import torch

from cardiolab.data.landmark_transforms import landmark_augmentation
from cardiolab.models.landmarks import decode_heatmaps, encode_heatmaps

POINTS = np.array([[10.0, 20.0], [30.0, 12.0]])
SHAPE = (40, 48)


def _item(points: np.ndarray) -> dict:
    """A 3-frame image whose first two channels are bright blobs at the two points, plus their heatmaps."""
    maps = encode_heatmaps(points, SHAPE, sigma_mm=2.0)
    image = np.concatenate([maps * 2 - 1, -np.ones((1, *SHAPE), np.float32)])
    return {"image": torch.tensor(image), "heatmaps": torch.tensor(maps)}


def test_rotation_moves_decoded_points_with_the_truth():
    deg = 30.0
    out = landmark_augmentation(rotate_deg=(deg, deg), scale=0, shift=0, intensity=0, prob=1.0)(_item(POINTS))
    got, _ = decode_heatmaps(np.asarray(out["heatmaps"]), "argmax", 0.3)
    # MONAI rotates by +deg about the centre; in (row, col) offsets that is the matrix of -deg
    a = math.radians(-deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = (np.array(SHAPE) - 1) / 2
    want = (POINTS - centre) @ rot.T + centre
    assert np.linalg.norm(got - want, axis=1).max() <= 1.0


def test_full_augmentation_applies_one_state_to_image_and_maps():
    aug = landmark_augmentation(rotate_deg=25, scale=0.15, shift=0.1, elastic=3.0, intensity=0, prob=1.0,
                                size=SHAPE, seed=3)
    out = aug(_item(POINTS))
    from_maps, _ = decode_heatmaps(np.asarray(out["heatmaps"]), "argmax", 0.3)
    from_image, _ = decode_heatmaps((np.asarray(out["image"][:2]) + 1) / 2, "argmax", 0.3)
    assert np.linalg.norm(from_maps - from_image, axis=1).max() <= 1.0
    assert np.linalg.norm(from_maps - POINTS, axis=1).max() > 1.0       # it did move


def test_same_seed_same_augmentation():
    a = landmark_augmentation(size=SHAPE, seed=5)(_item(POINTS))["heatmaps"]
    b = landmark_augmentation(size=SHAPE, seed=5)(_item(POINTS))["heatmaps"]
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b))
