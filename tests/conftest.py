"""Shared fixtures: real faces a fresh clone can get (scikit-image's bundled data)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut_rgb() -> np.ndarray:
    """NASA's public-domain portrait of Eileen Collins, 512x512 RGB, one frontal face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def lfw_faces() -> np.ndarray:
    """The first 100 images of scikit-image's lfw_subset: 25x25 grey face crops, float in [0,1]."""
    from skimage import data

    return data.lfw_subset()[:100]
