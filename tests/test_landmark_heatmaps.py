"""RVIP heatmaps (cardiolab.models.landmarks): encode/decode round trips, missing points, config errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiolab.core import CardiolabError
from cardiolab.models.landmarks import DECODERS, LandmarkConfig, LandmarkNet, decode_heatmaps, encode_heatmaps

POINTS = np.array([[12.3, 20.7], [30.6, 9.2]])        # off-grid on purpose


@pytest.mark.parametrize("method", DECODERS)
def test_gaussian_round_trip_within_half_pixel(method):
    maps = encode_heatmaps(POINTS, (40, 32), spacing=(1.5, 1.0), sigma_mm=3.0, kind="gaussian")
    points, confidence = decode_heatmaps(maps, method, threshold=0.5)
    assert np.linalg.norm(points - POINTS, axis=1).max() <= 0.5
    assert (confidence > 0.5).all()


@pytest.mark.parametrize("method", ["argmax", "component"])
def test_disc_round_trip_within_half_pixel(method):
    maps = encode_heatmaps(POINTS, (40, 32), spacing=(1.0, 1.0), sigma_mm=3.0, kind="disc")
    points, _ = decode_heatmaps(maps, method, threshold=0.5)
    assert np.linalg.norm(points - POINTS, axis=1).max() <= 0.5


def test_anisotropic_gaussian_is_round_in_mm():
    m = encode_heatmaps(np.array([[10.0, 10.0]]), (21, 21), spacing=(2.0, 1.0), sigma_mm=2.0)[0]
    np.testing.assert_allclose(m[11, 10], m[10, 12], rtol=1e-6)     # 2 mm down == 2 mm right


@pytest.mark.parametrize("method", DECODERS)
def test_flat_map_is_missing(method):
    maps = np.full((2, 16, 16), 0.1)
    points, confidence = decode_heatmaps(maps, method, threshold=0.5)
    assert np.isnan(points).all()
    np.testing.assert_allclose(confidence, [0.1, 0.1])


def test_absent_point_encodes_an_empty_map():
    maps = encode_heatmaps(np.array([[5.0, 5.0], [np.nan, np.nan]]), (16, 16), sigma_mm=2.0)
    assert maps[1].max() == 0
    points, _ = decode_heatmaps(maps, "argmax", 0.5)
    assert np.isnan(points[1]).all()


def test_sigma_must_be_positive():
    with pytest.raises(CardiolabError, match="landmarks.sigma_mm"):
        encode_heatmaps(POINTS, (8, 8), sigma_mm=0.0)
    with pytest.raises(CardiolabError, match="landmarks.sigma_mm"):
        LandmarkConfig(sigma_mm=-1.0)


def test_unknown_decoder_is_named():
    with pytest.raises(CardiolabError, match="landmarks.decoder"):
        LandmarkConfig(decoder="median")


def test_net_shapes_with_temporal_context():
    torch.manual_seed(0)
    net = LandmarkNet(LandmarkConfig(channels=(4, 8), temporal_context=1))
    x = torch.zeros(3, 3, 16, 16)
    assert net(x).shape == (3, 2, 16, 16)
    points, confidence = net.detect(x)
    assert points.shape == (3, 2, 2)
    assert confidence.shape == (3, 2)
