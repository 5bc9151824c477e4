"""Shared fixtures: real faces a fresh clone can get (scikit-image's bundled data), the
runtime the tests run on (--runtime) and a count of the interpreters a test creates."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

# The runtime names interpreter_class reports for detect.runtime.
RUNTIME_NAMES = {"litert": "ai_edge_litert", "tflite": "tflite_runtime"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runtime", choices=("auto", "litert", "tflite"), default="auto",
        help="the TFLite runtime these tests must run on (`make test` runs the tflite tests "
             "again with --runtime=tflite in .venv-tflite); detect.runtime = auto must pick "
             "it here, so in-process pipelines and `edgeguard` child processes all use it")


@pytest.fixture(scope="session")
def runtime_choice(request: pytest.FixtureRequest) -> str:
    """The --runtime option: the detect.runtime the tests ask for."""
    return str(request.config.getoption("--runtime"))


@pytest.fixture(scope="session", autouse=True)
def _auto_picks_the_runtime_asked_for(runtime_choice: str) -> None:
    # Tests build their configs with detect.runtime = auto, here and in child processes:
    # --runtime=tflite is only true if auto picks tflite_runtime in this environment.
    if runtime_choice == "auto":
        return
    from edgeguard.detect import runtime

    name, _ = runtime.interpreter_class("auto")
    if name != RUNTIME_NAMES[runtime_choice]:
        pytest.fail(f"--runtime={runtime_choice}: detect.runtime = auto picks {name} in this "
                    "environment; run these tests where only that runtime is installed")


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
