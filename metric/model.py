"""A model's identity: :class:`ModelRef`, the one value that names what scored a result.

Every stored score, cached teacher score and registry row is keyed by a model's identity and the
protocol it ran under. That identity is built here and only here:

- :meth:`ModelRef.official`: the release's weights (``scratch``, ``finetune``, ``linear_layer``,
  ``pretrained``; or their ids ``dpam-<name>-official``), version ``dpam-0.0.4``;
- :meth:`ModelRef.registered`: a fine-tuned model of the registry (a safetensors file), version the
  first 16 hex digits of the file's sha256;
- :meth:`ModelRef.student`: the committed fast student (``protocol: student``), version the first 16
  hex digits of its weights' sha256.

A protocol owns its preprocessing rule (:class:`Protocol`): ``official`` mixes to mono as the release
does; ``dense`` and ``student`` keep channels and score them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .release import DPAM_VERSION, MODELS, file_sha256

if TYPE_CHECKING:
    from .score import DPAMScorer

__all__ = [
    "OFFICIAL_MODEL_VERSION",
    "PROTOCOL_RULES",
    "ModelRef",
    "Protocol",
    "official_name",
    "protocol_rule",
]

OFFICIAL_MODEL_VERSION = f"dpam-{DPAM_VERSION}"  # the version stored with scores of the release's weights
DEFAULT_WINDOW_SECONDS = 8.0
DEFAULT_HOP_SECONDS = 4.0


@dataclass(frozen=True)
class Protocol:
    """How a protocol reads a pair: ``mono`` (channels are mixed before scoring) and ``windowed``
    (scored in analysis windows, channel by channel, signals aligned)."""

    name: str
    mono: bool
    windowed: bool


PROTOCOL_RULES: dict[str, Protocol] = {
    "dense": Protocol("dense", mono=False, windowed=True),
    "official": Protocol("official", mono=True, windowed=False),
    "student": Protocol("student", mono=False, windowed=True),
}


def protocol_rule(name: str) -> Protocol:
    """The :class:`Protocol` named ``name``; ``ValueError`` listing the protocols otherwise."""
    try:
        return PROTOCOL_RULES[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; available: {', '.join(PROTOCOL_RULES)}") from None


def official_name(model: str) -> str:
    """The release's model name for ``scratch`` or ``dpam-scratch-official`` (and the other three);
    ``ValueError`` listing the choices otherwise."""
    name = model
    if model.startswith("dpam-") and model.endswith("-official"):
        name = model[len("dpam-") : -len("-official")]
    if name not in MODELS:
        choices = ", ".join([*MODELS, *(f"dpam-{m}-official" for m in MODELS)])
        raise ValueError(f"unknown model {model!r}; choose one of {choices}")
    return name


@dataclass(frozen=True)
class ModelRef:
    """What scores a pair: weights, protocol and window settings, and the identity stored with results.

    ``id`` and ``version``: the model's id (``dpam-scratch-official``, a registry version, the student's
    version) and the version of its weights (``dpam-0.0.4`` for the release's; a weights digest
    otherwise). ``weights``: a registered model's safetensors file (None: the release's or the committed
    student's). ``release_model``: the release model whose weights (or, for the student, whose shape) are
    used. ``protocol``, ``window_seconds``, ``hop_seconds``: how pairs are scored; ``length_tolerance``
    bounds the length difference a windowed protocol accepts (it never changes a number, so it is not
    part of the key). Frozen and picklable: it travels to Dask workers.
    """

    id: str
    version: str
    protocol: str = "dense"
    weights: str | None = None
    release_model: str = "scratch"
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    hop_seconds: float = DEFAULT_HOP_SECONDS
    length_tolerance: int = 1024

    def __post_init__(self) -> None:
        protocol_rule(self.protocol)
        if self.window_seconds <= 0 or self.hop_seconds <= 0 or self.hop_seconds > self.window_seconds:
            raise ValueError("need 0 < hop_seconds <= window_seconds")

    # ------------------------------------------------------------ constructors
    @classmethod
    def official(cls, model: str = "scratch", protocol: str = "dense", **settings: Any) -> ModelRef:
        """The release's weights ``model`` (``scratch`` or ``dpam-scratch-official``, ...) under
        ``official`` or ``dense`` (the ``student`` protocol is :meth:`student`'s)."""
        if protocol == "student":
            raise ValueError("the student protocol scores with the committed student: ModelRef.student()")
        name = official_name(model)
        return cls(f"dpam-{name}-official", OFFICIAL_MODEL_VERSION, protocol, release_model=name, **settings)

    @classmethod
    def registered(cls, version: str, weights: str | Path, weights_sha256: str | None = None, *,
                   protocol: str = "dense", **settings: Any) -> ModelRef:  # fmt: skip
        """A registry model: ``version`` (its registry version, also its id) and its weights file.
        ``weights_sha256`` as recorded in the registry (computed from the file when not given)."""
        digest = weights_sha256 or file_sha256(Path(weights))
        return cls(version, digest[:16], protocol, weights=str(weights), **settings)

    @classmethod
    def for_protocol(cls, model: str = "scratch", protocol: str = "dense", **settings: Any) -> ModelRef:
        """What ``jndqa score --model M --protocol P`` scores with: the release's ``model``, or the
        committed student under ``student``."""
        if protocol == "student":
            return cls.student(**settings)
        return cls.official(model, protocol, **settings)

    @classmethod
    def student(cls, **settings: Any) -> ModelRef:
        """The committed fast student under the ``student`` protocol."""
        from .student import STUDENT_VERSION, student_weights

        settings.pop("protocol", None)
        return cls(STUDENT_VERSION, file_sha256(student_weights())[:16], "student", **settings)

    def with_protocol(self, protocol: str) -> ModelRef:
        return replace(self, protocol=protocol)

    # --------------------------------------------------------------- identity
    @property
    def rule(self) -> Protocol:
        """The protocol's preprocessing rule."""
        return protocol_rule(self.protocol)

    @property
    def protocol_key(self) -> str:
        """The protocol as stored in a result's key: under a windowed protocol, window settings other
        than the defaults are part of it (``dense:w4h2``), since they change the numbers."""
        windows = (self.window_seconds, self.hop_seconds)
        if not self.rule.windowed or windows == (DEFAULT_WINDOW_SECONDS, DEFAULT_HOP_SECONDS):
            return self.protocol
        return f"{self.protocol}:w{self.window_seconds:g}h{self.hop_seconds:g}"

    @property
    def key(self) -> tuple[str, str, str]:
        """(model id, model version, protocol key): the model's part of every stored result's key."""
        return self.id, self.version, self.protocol_key

    @property
    def cache_id(self) -> str:
        """One string naming the model, protocol and windows, for content-keyed caches
        (e.g. ``dense:w8h4:dpam-scratch-official:dpam-0.0.4``)."""
        return f"{self.protocol}:w{self.window_seconds:g}h{self.hop_seconds:g}:{self.id}:{self.version}"

    def registry_row(self, reason: str | None = None) -> dict[str, Any]:
        """The model registry row of release weights (the store's seed row); registered models have
        their own rows, written when they are trained."""
        if self.weights is not None or self.protocol == "student":
            raise ValueError(f"{self.id}: only the release's weights have a seed registry row")
        why = reason or f"the official DPAM release (dpam {DPAM_VERSION}), {self.release_model} model"
        return {"version": self.id, "model_id": self.id, "kind": self.release_model, "parent": None, "reason": why}

    # ---------------------------------------------------------------- scoring
    def scorer(self, release: Path | None = None, **options: Any) -> DPAMScorer:
        """A :class:`jndqa.metric.DPAMScorer` for this model and protocol (a registered model's p_jnd
        calibration included). ``options``: the scorer's other keyword arguments (dtype, batching)."""
        from .modelfile import load_calibrations, load_model
        from .score import DPAMScorer

        network = calibrator = None
        if self.weights is not None:  # the calibration fitted under this protocol, if the model has one
            network, calibrator = load_model(self.weights), load_calibrations(self.weights).get(self.protocol_key)
        return DPAMScorer(self.release_model, self.protocol, release=release, network=network, calibrator=calibrator,
                          window_seconds=self.window_seconds, hop_seconds=self.hop_seconds,
                          length_tolerance=self.length_tolerance, **options)  # fmt: skip
