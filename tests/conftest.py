"""Shared fixtures: real faces a fresh clone can get (scikit-image's bundled data)."""

from __future__ import annotations

from typing import Any

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


@pytest.fixture
def interpreters(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model path of every TFLite interpreter created while the test runs: the runtime
    adapter's Interpreter class, wrapped to count its calls (the real one is created)."""
    from edgeguard.detect import runtime

    created: list[str] = []
    real = runtime.interpreter_class

    def counting(choice: str = "auto") -> tuple[str, Any]:
        name, cls = real(choice)

        def make(*args: Any, **kwargs: Any) -> Any:
            created.append(str(kwargs.get("model_path", args[0] if args else "")))
            return cls(*args, **kwargs)

        return name, make

    monkeypatch.setattr(runtime, "interpreter_class", counting)
    return created
