"""The demo corpus: about 12 items of 5–10 s, half speech, half music, built from what Debian
packages put on the machine (set-up installs them; nothing is downloaded here):

- speech: festival voices (``festvox-us-slt-hts``, ``festvox-kallpc16k``), espeak-ng voices,
  and the short real recordings of ``alsa-utils`` joined into one item;
- music: General MIDI files of ``planetblupi-music-midi`` rendered by fluidsynth with the
  ``timgm6mb-soundfont``, and excerpts of the ``fb-music-high`` soundtrack.

Items keep their sources' rates (16, 22.05, 32, 44.1 and 48 kHz) and channel counts, as a real
corpus would. Where a source is missing, the builder synthesises a stand-in and says so in
the manifest's ``source`` column and in :attr:`DemoCorpus.notes`.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BUILDER_VERSION",
    "DemoCorpus",
    "build_demo_corpus",
    "excerpt",
    "read_audio",
    "render_midi",
    "speak_festival",
    "write_item",
]

BUILDER_VERSION = "1"

# Harvard sentences (IEEE 1969 recommended practice for speech quality measurements), public domain.
SENTENCES = [
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish. Rice is often served in round bowls. "
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage. "
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell. The boy was there when the sun rose. "
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring. Kick the ball straight and follow through. "
    "Help the woman get back to her feet.",
]
SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
MIDI_DIR = Path("/usr/share/planetblupi/music")
ALSA_DIR = Path("/usr/share/sounds/alsa")
FB_DIR = Path("/usr/share/games/frozen-bubble/snd")


@dataclass
class DemoCorpus:
    root: Path
    manifest: Path
    items: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _run(cmd: list[str], timeout: float = 120.0, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=True, **kw)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """An audio file as float32 ``[frames, channels]`` and its rate."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data, int(rate)


def write_item(path: Path, data: np.ndarray, rate: int) -> None:
    """Write a corpus item as 16-bit PCM, scaled down to a 0.98 peak if it is louder."""
    import soundfile as sf

    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > 0.98:
        data = data * (0.98 / peak)
    sf.write(str(path), data, rate, subtype="PCM_16")


def excerpt(data: np.ndarray, rate: int, seconds: float, start: float = 0.0) -> np.ndarray:
    """An excerpt of ``seconds`` from ``start``, with 10 ms fades so it starts and ends cleanly."""
    a = int(start * rate)
    x = data[a : a + int(seconds * rate)].copy()
    fade = min(int(0.01 * rate), len(x) // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)[:, None]
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    return x


def speak_festival(text: str, voice: str, out: Path) -> None:
    """``text`` read by festival's ``voice`` (e.g. ``voice_kal_diphone``) into the WAV file ``out``."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        _run(["text2wave", "-o", str(out), "-eval", f"({voice})", f.name])
    finally:
        Path(f.name).unlink(missing_ok=True)


def _espeak(text: str, voice: str, out: Path) -> None:
    _run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(out), text])


def render_midi(midi: Path, out: Path, rate: int = 44100) -> None:
    """A General MIDI file rendered by fluidsynth with the TimGM6mb soundfont into the WAV file ``out``."""
    _run(["fluidsynth", "-ni", "-q", "-g", "0.7", "-r", str(rate), "-F", str(out), str(SOUNDFONT), str(midi)],
         timeout=300)  # fmt: skip


def _synth_speech(rate: int, seconds: float, seed: int) -> np.ndarray:
    """A crude speech stand-in: a glottal pulse train through moving formant resonances, in syllables."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = np.cumsum(f0 / rate)
    src = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    y = np.zeros(n)
    for formant, bw in ((700, 130), (1200, 70), (2600, 160)):
        r = np.exp(-np.pi * bw / rate)
        w = 2 * np.pi * (formant * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))).mean() / rate
        y += lfilter([1.0], [1.0, -2 * r * np.cos(w), r * r], src)
    env = (np.sin(2 * np.pi * 3.5 * t) > -0.2).astype(np.float64)
    y = y * np.convolve(env, np.hanning(int(0.03 * rate)) / (0.015 * rate), "same")
    return (0.3 * y / (np.abs(y).max() + 1e-9)).astype(np.float32)[:, None]


def _synth_music(rate: int, seconds: float, seed: int) -> np.ndarray:
    """A music stand-in: a few decaying harmonic notes per second, stereo."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    y = np.zeros((n, 2))
    for start in np.arange(0, seconds, 0.25):
        f = 220 * 2 ** (rng.integers(0, 24) / 12)
        a, m = int(start * rate), int(0.8 * rate)
        tt = np.arange(min(m, n - a)) / rate
        note = sum(np.sin(2 * np.pi * f * k * tt) / k for k in (1, 2, 3)) * np.exp(-4 * tt)
        pan = rng.uniform(0.2, 0.8)
        y[a : a + len(tt), 0] += (1 - pan) * note
        y[a : a + len(tt), 1] += pan * note
    return (0.3 * y / (np.abs(y).max() + 1e-9)).astype(np.float32)


def build_demo_corpus(dest: str | Path, *, log: Callable[[str], None] = print, force: bool = False) -> DemoCorpus:
    """Build (or reuse) the demo corpus in ``dest``; returns its root, manifest and notes."""
    root = Path(dest)
    manifest = root / "corpus.csv"
    stamp = root / ".builder"
    if not force and manifest.is_file() and stamp.is_file() and stamp.read_text().strip() == BUILDER_VERSION:
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        notes = sorted({r["source"] for r in rows if r["source"].startswith("synthesised")})
        return DemoCorpus(root, manifest, rows, notes)
    if root.exists():
        shutil.rmtree(root)
    (root / "speech").mkdir(parents=True)
    (root / "music").mkdir(parents=True)
    rows: list[dict] = []
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="jndqa-demo-"))

    def add(rel: str, data: np.ndarray, rate: int, tags: str, source: str) -> None:
        write_item(root / rel, data, rate)
        rows.append({"path": rel, "tags": tags, "source": source})
        log(f"  {rel:28s} {len(data) / rate:4.1f} s  {rate} Hz  {data.shape[1]} ch  ({source})")

    def attempt(make: Callable[[], tuple[np.ndarray, int, str]], fallback: Callable[[], np.ndarray], rate: int,
                rel: str, tags: str, what: str) -> None:  # fmt: skip
        try:
            data, r, source = make()
        except (OSError, subprocess.SubprocessError, RuntimeError, ValueError) as exc:
            data, r, source = fallback(), rate, f"synthesised stand-in ({what} unavailable: {type(exc).__name__})"
            notes.append(f"{rel}: {what} unavailable, synthesised instead")
        add(rel, data, r, tags, source)

    try:
        log(f"building the demo corpus in {root}")
        # Speech: festival (two voices), espeak-ng (two voices), alsa-utils recordings.
        for k, (voice, name) in enumerate(
            [("voice_cmu_us_slt_arctic_hts", "festival slt"), ("voice_kal_diphone", "festival kal")]
        ):

            def make(k=k, voice=voice, name=name):
                out = tmp / f"fest{k}.wav"
                speak_festival(SENTENCES[k], voice, out)
                data, rate = read_audio(out)
                return excerpt(data, rate, min(8.0, len(data) / rate)), rate, name

            attempt(make, lambda k=k: _synth_speech(22050, 6.0, k), 22050, f"speech/festival_{k}.wav",
                    "speech", "festival")  # fmt: skip
        for k, voice in enumerate(["en-us", "en+f3"]):

            def make(k=k, voice=voice):
                out = tmp / f"espeak{k}.wav"
                _espeak(SENTENCES[2 + k], voice, out)
                data, rate = read_audio(out)
                return excerpt(data, rate, min(8.0, len(data) / rate)), rate, f"espeak-ng {voice}"

            attempt(make, lambda k=k: _synth_speech(22050, 6.0, 10 + k), 22050, f"speech/espeak_{k}.wav",
                    "speech", "espeak-ng")  # fmt: skip

        def alsa():
            names = ["Front_Left", "Front_Center", "Front_Right", "Rear_Left", "Rear_Right"]
            parts = []
            for n in names:
                data, rate = read_audio(ALSA_DIR / f"{n}.wav")
                parts += [data, np.zeros((int(0.15 * rate), data.shape[1]), np.float32)]
            return np.concatenate(parts), rate, "alsa-utils recordings"

        attempt(alsa, lambda: _synth_speech(48000, 7.0, 20), 48000, "speech/alsa_voices.wav", "speech", "alsa-utils")

        def festival_long():
            out = tmp / "fest_long.wav"
            speak_festival(SENTENCES[4], "voice_cmu_us_slt_arctic_hts", out)
            data, rate = read_audio(out)
            return excerpt(data, rate, min(9.0, len(data) / rate)), rate, "festival slt"

        attempt(festival_long, lambda: _synth_speech(16000, 8.0, 30), 16000, "speech/festival_2.wav", "speech",
                "festival")  # fmt: skip

        # Music: fluidsynth renders of Planet Blupi MIDI (four), Frozen Bubble soundtrack (two).
        for k, midi in enumerate(["music001.mid", "music003.mid", "music005.mid", "music007.mid"]):

            def make(k=k, midi=midi):
                out = tmp / f"midi{k}.wav"
                if not SOUNDFONT.is_file():
                    raise FileNotFoundError(SOUNDFONT)
                render_midi(MIDI_DIR / midi, out)
                data, rate = read_audio(out)
                if len(data) < 10 * rate:
                    raise ValueError("render too short")
                return excerpt(data, rate, 8.0, start=2.0), rate, f"fluidsynth {midi}"

            attempt(make, lambda k=k: _synth_music(44100, 8.0, 40 + k), 44100, f"music/blupi_{k}.wav", "music",
                    "fluidsynth/MIDI")  # fmt: skip
        for k, name in enumerate(["frozen-mainzik-1p.ogg", "frozen-mainzik-2p.ogg"]):

            def make(k=k, name=name):
                data, rate = read_audio(FB_DIR / name)
                return excerpt(data, rate, 8.0, start=20.0 + 10 * k), rate, f"fb-music-high {name}"

            attempt(make, lambda k=k: _synth_music(44100, 8.0, 50 + k), 44100, f"music/frozen_{k}.wav", "music",
                    "fb-music-high")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "tags", "source"])
        writer.writeheader()
        writer.writerows(rows)
    stamp.write_text(BUILDER_VERSION + "\n")
    return DemoCorpus(root, manifest, rows, notes)
