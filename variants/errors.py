"""Typed failures of the variant pipeline.

Two families:

- :class:`SpecError` is a configuration error (a bad ``variants:`` entry). It stops the whole
  command before anything is rendered (exit status 2 in the CLI).
- :class:`VariantError` and its subclasses are failures of one (item, variant) pair. They are
  recorded with their reason and never stop the other variants (:func:`jndqa.variants.render_all`
  returns them in place of the result).

Every message names the item, the variant (label and id) and the reason, and says what to do.
The errors pickle with their fields (they may cross process boundaries in a Dask runner).
"""

from __future__ import annotations

__all__ = [
    "AlignmentFailed",
    "DecoderEmpty",
    "EncoderFailed",
    "EncoderTimeout",
    "EncoderUnavailable",
    "InputError",
    "InvalidSamples",
    "SpecError",
    "VariantError",
    "VariantTooShort",
]


class SpecError(ValueError):
    """A variant spec is invalid: an unknown key, a bad value, or contradictory fields."""


class VariantError(Exception):
    """One variant of one item could not be rendered.

    Attributes: ``item`` (the reference's name), ``spec_label``, ``spec_id``, ``reason`` (what
    went wrong), ``hint`` (what to do), ``stderr`` (the tail of the failing tool's stderr, when
    there is one). ``item`` and the spec fields are filled in by the renderer when the error is
    raised below it.
    """

    #: What to do, when the raiser gives no more specific hint.
    default_hint = "see the reason; the other variants were rendered"

    def __init__(
        self,
        reason: str,
        *,
        item: str | None = None,
        spec_label: str | None = None,
        spec_id: str | None = None,
        hint: str | None = None,
        stderr: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.item = item
        self.spec_label = spec_label
        self.spec_id = spec_id
        self.hint = hint or self.default_hint
        self.stderr = stderr

    def __str__(self) -> str:
        where = []
        if self.item is not None:
            where.append(f"item {self.item!r}")
        if self.spec_label is not None or self.spec_id is not None:
            where.append(f"variant {self.spec_label!r} (id {self.spec_id})")
        head = ", ".join(where)
        text = f"{head}: {self.reason}" if head else self.reason
        text += f". What to do: {self.hint}"
        if self.stderr:
            text += f"\n--- stderr (tail) ---\n{self.stderr}"
        return text

    def row(self) -> dict:
        """A JSON-able record, in the shape of the other failure rows of the run."""
        return {
            "item": self.item,
            "variant": self.spec_label,
            "spec_id": self.spec_id,
            "kind": "variant",
            "error": type(self).__name__,
            "reason": self.reason,
        }


class InputError(VariantError):
    """The reference itself is unusable: unreadable, empty, not finite, or of a bad shape."""

    default_hint = "fix or remove the corpus item (it must be a readable, non-empty, finite audio file)"


class EncoderUnavailable(VariantError):
    """The encoder, decoder or ffmpeg binary the spec asks for is not there."""

    default_hint = "install the tool, or correct the codec name or path in the variant spec"


class EncoderFailed(VariantError):
    """An encoder, decoder or filter process exited with an error."""

    default_hint = "read the tool's stderr below; check the spec's codec options and filter graph"


class EncoderTimeout(VariantError):
    """An encoder, decoder or filter process ran past its time limit and was killed."""

    default_hint = "raise the render timeout, or check that the tool does not wait for input"


class DecoderEmpty(VariantError):
    """The decoder produced no samples, or output that cannot be read as audio."""

    default_hint = "check the decode command and that it writes a WAV file to {output}"


class InvalidSamples(VariantError):
    """The decoded variant contains NaN or infinite samples."""

    default_hint = "the codec or an effect produced non-finite values; check its options"


class VariantTooShort(VariantError):
    """The decoded variant is shorter than half the reference."""

    default_hint = "check that no effect trims the signal and that the decoder reads the whole stream"


class AlignmentFailed(VariantError):
    """The variant could not be aligned to the reference: the correlation peak is too low."""

    default_hint = (
        "listen to the variant; if its delay exceeds the lag window, raise max_lag; if an effect "
        "changes the signal this much on purpose, lower min_correlation"
    )
