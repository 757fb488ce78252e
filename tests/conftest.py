"""Shared fixtures. The official release (weights + sample audio of the dpam 0.0.4 source
package) is fetched with pip into the jndqa cache by the set-up step; when it is absent
the fixture runs that step, and skips only when no package index is reachable."""

from __future__ import annotations

from pathlib import Path

import pytest

from jndqa.metric.release import ReleaseNotFoundError, SetupError, fetch_release, find_release


@pytest.fixture(scope="session")
def release() -> Path:
    try:
        return find_release()
    except ReleaseNotFoundError:
        pass
    try:
        return fetch_release()
    except SetupError as exc:
        if exc.download_failed:
            pytest.skip(f"dpam==0.0.4 could not be downloaded (no package index reachable?): {exc}")
        raise


@pytest.fixture(scope="session")
def sample(release):
    """The release's sample clips, prepared for the model (mono, 22,050 Hz, int16 scale)."""
    from jndqa.metric import load_audio

    return {name: load_audio(release / "sample_audio" / f"{name}.wav").samples for name in ("ref", "2", "4")}


@pytest.fixture(scope="session")
def scratch(release):
    from jndqa.metric import DPAM

    return DPAM.official("scratch", release)
