"""More recordings for the fast student's teacher data, from the demo corpus's Debian packages:
about 40 items of 8 s that are not in the demo corpus.

    .venv/bin/python -m jndqa.datasets.student_corpus student-work/extra

A student trained on the demo items alone fits its training recordings far better than unseen
ones: it needs more recordings, not more segments of the same ones. This builder adds, without
downloading anything:

- music: the ten ``planetblupi-music-midi`` pieces rendered by fluidsynth (TimGM6mb), excerpts
  other than the demo's; excerpts of the three ``fb-music-high`` soundtracks other than the
  demo's; the game's sound effects joined into one item;
- speech: espeak-ng in twelve other voices, languages, speeds and pitches (the Harvard sentences);
  festival's two voices reading sentences the demo items do not.

It leaves out the sources of the demo items that the training holds out (``music003.mid``, the
alsa-utils recordings, espeak-ng's ``en-us`` voice), so those stay unseen recordings. Items keep
their sources' rates; a source that fails is skipped and reported (this is training material, a
stand-in would teach the student nothing).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .demo import FB_DIR, MIDI_DIR, SENTENCES, SOUNDFONT, excerpt, read_audio, render_midi, speak_festival, write_item

__all__ = ["build_student_corpus"]

# (midi, start s): the demo renders music001/003/005/007 from 2 s; music003 is held out.
MIDI_EXCERPTS = [
    ("music000.mid", 2.0), ("music000.mid", 30.0), ("music001.mid", 30.0), ("music002.mid", 2.0),
    ("music002.mid", 30.0), ("music004.mid", 2.0), ("music004.mid", 30.0), ("music005.mid", 30.0),
    ("music006.mid", 2.0), ("music006.mid", 30.0), ("music007.mid", 30.0), ("music008.mid", 2.0),
    ("music008.mid", 30.0), ("music009.mid", 2.0), ("music009.mid", 30.0),
]  # fmt: skip
# (file, start s): the demo takes frozen-mainzik-1p at 20 s and -2p at 30 s.
SOUNDTRACK_EXCERPTS = [
    ("frozen-mainzik-1p.ogg", 90.0), ("frozen-mainzik-1p.ogg", 170.0), ("frozen-mainzik-1p.ogg", 250.0),
    ("frozen-mainzik-2p.ogg", 80.0), ("frozen-mainzik-2p.ogg", 150.0), ("introzik.ogg", 10.0),
    ("introzik.ogg", 80.0), ("introzik.ogg", 150.0),
]  # fmt: skip
EFFECTS = ["applause", "destroy_group", "lose", "newroot_solo", "snore", "cancel", "malus", "noh", "typewriter"]
# (voice, words per minute, pitch 0-99, sentence): the demo uses en-us and en+f3.
ESPEAK_VOICES = [
    ("en-gb", 160, 50, 0), ("en-gb-scotland+m3", 140, 40, 1), ("en-029+f2", 170, 60, 3), ("en-gb-x-rp+f4", 150, 70, 4),
    ("de", 150, 45, 0), ("fr-fr+f1", 155, 65, 1), ("es", 165, 50, 2), ("it+m2", 145, 35, 3),
    ("pt-br+f3", 160, 55, 4), ("nl", 150, 50, 2), ("pl+m4", 135, 30, 0), ("sv+f5", 175, 75, 1),
]  # fmt: skip
# (festival voice, sentence): the demo reads 0 (slt), 1 (kal) and 4 (slt).
FESTIVAL = [
    ("voice_cmu_us_slt_arctic_hts", 2), ("voice_cmu_us_slt_arctic_hts", 3),
    ("voice_kal_diphone", 3), ("voice_kal_diphone", 4),
]  # fmt: skip
SECONDS = 8.0


def build_student_corpus(dest: str | Path, *, log: Callable[[str], None] = print) -> list[dict]:
    """Build the items into ``dest`` (replaced) with a ``corpus.csv``; returns its rows."""
    import subprocess

    root = Path(dest)
    if root.exists():
        shutil.rmtree(root)
    (root / "music").mkdir(parents=True)
    (root / "speech").mkdir()
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="jndqa-student-corpus-"))

    def add(rel: str, make: Callable[[], tuple[np.ndarray, int]], tags: str, source: str) -> None:
        try:
            data, rate = make()
        except (OSError, subprocess.SubprocessError, RuntimeError, ValueError) as exc:
            log(f"  {rel}: skipped ({source}: {type(exc).__name__}: {exc})")
            return
        write_item(root / rel, data, rate)
        rows.append({"path": rel, "tags": tags, "source": source})
        log(f"  {rel:32s} {len(data) / rate:4.1f} s  {rate} Hz  {data.shape[1]} ch  ({source})")

    sources: dict[str, tuple[np.ndarray, int]] = {}  # each MIDI rendered, each soundtrack decoded, once

    def midi_excerpt(midi: str, start: float) -> tuple[np.ndarray, int]:
        if midi not in sources:
            for need in (SOUNDFONT, MIDI_DIR / midi):
                if not need.is_file():
                    raise FileNotFoundError(f"{need} is missing (install the Debian packages: make setup)")
            out = tmp / f"{midi}.wav"
            render_midi(MIDI_DIR / midi, out)
            sources[midi] = read_audio(out)
        data, rate = sources[midi]
        if len(data) < (start + SECONDS) * rate:
            raise ValueError(f"render is {len(data) / rate:.0f} s, too short for an excerpt at {start:.0f} s")
        return excerpt(data, rate, SECONDS, start=start), rate

    def soundtrack_excerpt(name: str, start: float) -> tuple[np.ndarray, int]:
        if name not in sources:
            sources[name] = read_audio(FB_DIR / name)
        data, rate = sources[name]
        return excerpt(data, rate, SECONDS, start=start), rate

    def effects() -> tuple[np.ndarray, int]:
        parts = []
        for name in EFFECTS:
            data, rate = read_audio(FB_DIR / f"{name}.ogg")
            if data.shape[1] == 1:
                data = np.repeat(data, 2, axis=1)
            parts += [data, np.zeros((int(0.2 * rate), 2), np.float32)]
        return np.concatenate(parts), rate

    def speech(render: Callable[[Path], None], name: str) -> tuple[np.ndarray, int]:
        out = tmp / f"{name}.wav"
        render(out)
        data, rate = read_audio(out)
        return excerpt(data, rate, min(SECONDS, len(data) / rate)), rate

    try:
        log(f"building the student's extra corpus in {root}")
        for midi, start in MIDI_EXCERPTS:
            add(f"music/{Path(midi).stem}_{start:03.0f}s.wav", lambda m=midi, s=start: midi_excerpt(m, s), "music",
                f"fluidsynth {midi} from {start:.0f} s")  # fmt: skip
        for name, start in SOUNDTRACK_EXCERPTS:
            add(f"music/{Path(name).stem}_{start:03.0f}s.wav",
                lambda n=name, s=start: soundtrack_excerpt(n, s),
                "music", f"fb-music-high {name} from {start:.0f} s")  # fmt: skip
        add("music/fb_effects.wav", effects, "effects", "frozen-bubble sound effects, joined")
        for voice, wpm, pitch, sentence in ESPEAK_VOICES:
            name = f"espeak_{voice.replace('+', '_')}"

            def render(out, voice=voice, wpm=wpm, pitch=pitch, sentence=sentence):
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(out),
                                SENTENCES[sentence]], capture_output=True, timeout=120, check=True)  # fmt: skip

            add(f"speech/{name}.wav", lambda r=render, n=name: speech(r, n), "speech", f"espeak-ng {voice}")
        for voice, sentence in FESTIVAL:
            name = f"festival_{'slt' if 'slt' in voice else 'kal'}_{sentence}"

            def read(out, voice=voice, sentence=sentence):
                speak_festival(SENTENCES[sentence], voice, out)

            add(f"speech/{name}.wav", lambda r=read, n=name: speech(r, n), "speech", f"festival {voice}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(root / "corpus.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "tags", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", type=Path, help="folder to (re)build")
    args = ap.parse_args(argv)
    rows = build_student_corpus(args.dest)
    print(f"{len(rows)} items in {args.dest}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
