"""Which model a command scores with: the registry's rows turned into :class:`jndqa.metric.ModelRef`.

The identity of a model is built in :mod:`jndqa.metric.model`; this module only looks the registry
up (the store knows rows, not metrics) and seeds it with the release's weights.
"""

from __future__ import annotations

from typing import Any

from jndqa.metric import ModelRef
from jndqa.store import Store

__all__ = ["OFFICIAL", "model_from_row", "resolve_model", "seed_registry"]

OFFICIAL = ModelRef.official("scratch")  # the first production model of every store


def seed_registry(store: Store) -> None:
    """Register the release's scratch weights as the store's first production model (once)."""
    store.ensure_model(OFFICIAL.registry_row())


def model_from_row(store: Store, row: dict, *, protocol: str = "dense", **settings: Any) -> ModelRef:
    """The :class:`ModelRef` of a registry row under ``protocol`` (``settings``: window settings)."""
    if row.get("weights"):
        return ModelRef.registered(row["version"], store.model_weights(row), row.get("weights_sha256"),
                                   protocol=protocol, **settings)  # fmt: skip
    return ModelRef.official(row.get("kind") or "scratch", protocol, **settings)


def resolve_model(name: str, store: Store | None = None, *, protocol: str = "dense", **settings: Any) -> ModelRef:
    """The model a config's ``metric.model`` names: ``production`` (the registry's production model),
    a registered version (``jndqa models`` lists them), or an official model name (``scratch``, ...,
    ``dpam-scratch-official``). ``protocol: student`` is the committed student whatever the name.
    ``settings``: ``window_seconds``, ``hop_seconds``, ``length_tolerance``."""
    if protocol == "student":
        if store is not None:
            from .student import register_student

            register_student(store)
        return ModelRef.student(**settings)
    row = None
    if store is not None:
        seed_registry(store)
        row = store.production_model() if name == "production" else store.model(name)
    elif name == "production":
        name = OFFICIAL.id
    if row is not None:
        return model_from_row(store, row, protocol=protocol, **settings)
    try:
        return ModelRef.official(name, protocol, **settings)
    except ValueError:
        raise ValueError(f"metric.model {name!r} is neither an official model ({OFFICIAL.release_model}, ...) nor a "
                         "registered version (see `jndqa models`)") from None  # fmt: skip
