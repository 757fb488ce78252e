"""Plugin chains of variants (``plugins:``) with real plugins, real ffmpeg and real child processes.

Plugins: Steve Harris's SC4 compressor as LADSPA (Debian swh-plugins: ``sc4_1882.so``, label
``sc4``) and as LV2 (swh-lv2: ``http://plugin.org.uk/swh-plugins/sc4``), both through Debian's
ffmpeg; pedalboard's built-in effects (no VST3 binary ships on this machine or in Debian, so no
real VST3 is loaded; pedalboard loads VST3 only on Linux); and, for the failures, plugin binaries
compiled here with the C compiler that crash (SIGSEGV) or hang (pause()) when pedalboard loads them.

The signal: stereo band-limited noise (200 Hz - 4 kHz) at 48 kHz alternating every 0.25 s between
LOUD = -8 dB and QUIET = -24 dB RMS, D = 16 dB apart. Levels are measured on the settled middle of
each segment (its first quarter, 62.5 ms, is more than 3 release times of 20 ms).

What a compressor must do to it (derivation): above threshold + knee, a compressor of ratio R sets
its gain to (T - d)(1 - 1/R) dB for a detected level d = level + c, where c is its detector's
calibration offset (RMS vs peak, stereo link); the output level is level/R + T(1 - 1/R) - c(1 - 1/R),
so two levels D dB apart come out D/R dB apart whatever c is. With T = -30 dB, knee 1 dB, both
levels sit >= 6 dB above T + knee (SC4's c was measured +2.8 dB, so QUIET is detected at about -21 dB).
TOL_DB = 1 dB covers the detector's ripple on noise (the settled segment levels vary by 0.1 dB).
Below threshold the gain is 1: a level there comes out unchanged (to 0.1 dB, the knee being >= 10 dB
away). Ratio 1 makes the gain 0 dB: samples unchanged to SC4's arithmetic (see that test).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jndqa.variants import (
    EncoderFailed,
    EncoderTimeout,
    EncoderUnavailable,
    Reference,
    RenderedVariant,
    SpecError,
    VariantError,
    encoder_version,
    parse_variants,
    render,
    render_all,
)
from jndqa.variants.plugins import filter_graph, filter_option, lv2_path, resolve_element

RATE = 48000
SEGMENT = RATE // 4
SEGMENTS = 8
LOUD, QUIET = -8.0, -24.0
D = LOUD - QUIET
TOL_DB = 1.0
SC4_URI = "http://plugin.org.uk/swh-plugins/sc4"
LADSPA_DIRS = ["/usr/local/lib/ladspa", "/usr/lib/ladspa", "/usr/lib/x86_64-linux-gnu/ladspa"]
LV2_DIRS = ["/usr/local/lib/lv2", "/usr/lib/lv2", "/usr/lib/x86_64-linux-gnu/lv2"]
# SC4 settings: fast attack, 20 ms release, threshold -30 dB (its lowest), knee 1 dB.
SC4 = {"attack": 1.5, "release": 20, "threshold": -30, "knee": 1}
SC4_LADSPA = {"c1": 1.5, "c2": 20, "c3": -30, "c5": 1}  # c1 attack, c2 release, c3 threshold, c4 ratio, c5 knee


def _first(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.exists()), None)


SC4_SO = _first([Path(d, "sc4_1882.so") for d in LADSPA_DIRS])
SC4_BUNDLE = _first([Path(d, "sc4-swh.lv2") for d in LV2_DIRS])
needs_swh = pytest.mark.skipif(
    SC4_SO is None or SC4_BUNDLE is None or shutil.which("ffmpeg") is None,
    reason="needs Debian's ffmpeg and swh-plugins swh-lv2 (`make test` installs them as root)",
)
needs_pedalboard = pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import pedalboard"], capture_output=True).returncode != 0,
    reason="needs pedalboard: pip install 'jndqa[plugins]' (make installs it)",
)
CC = shutil.which("cc") or shutil.which("gcc")


def lv2(**controls) -> dict:
    return {"lv2": SC4_URI, "controls": controls}


def ladspa(**controls) -> dict:
    return {"ladspa": "sc4_1882", "name": "sc4", "controls": controls}


def synth() -> np.ndarray:
    from scipy import signal

    rng = np.random.default_rng(7)
    n = SEGMENT * SEGMENTS
    b, a = signal.butter(4, [200 / (RATE / 2), 4000 / (RATE / 2)], "band")
    x = signal.lfilter(b, a, rng.standard_normal((n, 2)), axis=0)
    x /= np.sqrt(np.mean(x**2, axis=0))
    level = np.where((np.arange(n) // SEGMENT) % 2 == 0, LOUD, QUIET)
    return (x * 10 ** (level / 20)[:, None]).astype(np.float32)


def levels(y: np.ndarray) -> tuple[float, float]:
    """Mean RMS level (dB) of the settled loud and quiet segments (the first pair is skipped)."""
    loud, quiet = [], []
    for k in range(2, SEGMENTS):
        s = y[k * SEGMENT + SEGMENT // 4 : (k + 1) * SEGMENT - SEGMENT // 8].astype(np.float64)
        (loud if k % 2 == 0 else quiet).append(10 * np.log10(np.mean(s**2)))
    return float(np.mean(loud)), float(np.mean(quiet))


@pytest.fixture(scope="module")
def ref() -> Reference:
    return Reference.from_array(synth(), RATE, "loud-quiet")


@pytest.fixture(scope="module")
def compressed(ref) -> dict[str, RenderedVariant | VariantError]:
    """The SC4 renders the tests below look at, rendered together (two at a time)."""
    if SC4_SO is None or SC4_BUNDLE is None:
        pytest.skip("needs swh-plugins and swh-lv2")
    entries = {
        "ladspa r4": {"plugins": [ladspa(**SC4_LADSPA, c4=4)]},
        "lv2 r4": {"plugins": [lv2(**SC4, ratio=4)]},
        "lv2 r1": {"plugins": [lv2(**SC4, ratio=1)]},
        "gain, comp": {"plugins": [{"ffmpeg": "volume=-20dB"}, lv2(**SC4, ratio=4)]},
        "comp, gain": {"plugins": [lv2(**SC4, ratio=4), {"ffmpeg": "volume=-20dB"}]},
    }
    specs = parse_variants(list(entries.values()))
    return dict(zip(entries, render_all(ref, specs, workers=2), strict=True))


def ok(result) -> RenderedVariant:
    assert isinstance(result, RenderedVariant), str(result)
    return result


# --- specs ---------------------------------------------------------------------------------------


def test_spec_syntax_ids_and_labels():
    a, b, c = parse_variants(
        [
            {"plugins": [ladspa(c4=4)]},
            {"plugins": [lv2(ratio=4), {"pedalboard": "Compressor", "parameters": {"ratio": 4}}], "codec": "flac"},
            {
                "plugins": [{"pedalboard": "./plugins/My Comp.vst3"}, {"ffmpeg": "highpass=f=80,volume=-3dB"}],
                "effects": "lowpass=f=8000",
            },
        ]
    )
    [d] = parse_variants([{"plugins": [{"ladspa": "sc4_1882.so", "name": "sc4", "controls": {4: 4}}], "label": "x"}])
    assert [a.label, b.label, c.label] == ["sc4", "flac + sc4 + Compressor", "My Comp + highpass + volume + lowpass"]
    assert a.kind == c.kind == "effects" and b.kind == "ffmpeg"
    # normalised: "sc4_1882.so" is "sc4_1882", control 4 is c4, 4 is 4.0; the label is not in the id
    assert d.id == a.id
    assert a.canonical() == '{"plugins":[{"controls":{"c4":4.0},"ladspa":"sc4_1882","name":"sc4"}]}'
    # a dumped spec parses back to the same id (the pipeline hands specs to workers this way)
    assert parse_variants([b.model_dump(mode="json", exclude_none=True)])[0].id == b.id
    # an unset chain is left out of the canonical form, so the ids of existing specs do not change
    [flac] = parse_variants([{"codec": "flac"}])
    assert flac.canonical() == '{"codec":"flac","container":"flac"}' and flac.plugins is None
    # order is part of the identity
    swapped = parse_variants([{"plugins": list(reversed(b.model_dump()["plugins"])), "codec": "flac"}])[0]
    assert swapped.id != b.id


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        ([], "plugins is empty"),
        ({"lv2": SC4_URI}, "plugins must be a list"),
        ([lv2(ratio="four")], "plugins[0].controls.ratio must be a number, not 'four'"),
        ([lv2(ratio=True)], "must be a number"),
        ([lv2(ratio=float("nan"))], "finite"),
        ([{"lv": SC4_URI}], "unknown key 'lv' (did you mean 'lv2'?)"),
        ([{"lv2": SC4_URI, "contrls": {}}], "unknown key 'contrls' (did you mean 'controls'?)"),
        ([{"lv2": SC4_URI, "parameters": {}}], "'parameters' belongs to pedalboard elements"),
        ([{"lv2": SC4_URI, "ladspa": "sc4_1882"}], "exactly one of"),
        ([{"lv2": "sc4"}], "is not a URI"),
        ([{"ffmpeg": "anull"}, {"ladspa": "sc4_1882"}], "plugins[1]: a ladspa element needs name"),
        ([ladspa(attack=3)], "not a LADSPA control index; write c0"),
        ([{"pedalboard": "compressor"}], "neither a built-in effect's class name"),
        ([{"pedalboard": "Gain", "parameters": {"gain_db": [1]}}], "must be a number"),
        ([{"ffmpeg": "volume=2;anull"}], "not ';'"),
        (["volume=2"], "plugins[0] must be a mapping"),
    ],
)
def test_spec_errors_name_the_element(plugins, message):
    with pytest.raises(SpecError) as info:
        parse_variants([{"codec": "flac"}, {"plugins": plugins}])
    assert "variants[1]: plugins" in str(info.value) and message in str(info.value)


def test_unknown_top_level_key_suggests_plugins():
    with pytest.raises(SpecError, match=r"unknown key 'plugin' \(did you mean 'plugins'\?\)"):
        parse_variants([{"plugin": [lv2()]}])


def test_filter_graph_escapes_uris_and_paths():
    # Two levels (ffmpeg's "Notes on filtergraph escaping"): ':' for the filter's options, then
    # backslashes, quotes, brackets, ',' and ';' for the graph.
    assert filter_option("http://x/y") == "http\\\\://x/y"
    assert filter_option("/a b/it's,[x];y") == "/a\\\\\\ b/it\\\\\\'s\\,\\[x\\]\\;y"
    [spec] = parse_variants([{"plugins": [lv2(ratio=4, threshold=-12.5), {"ffmpeg": "volume=2"}]}])
    r = [resolve_element(e) for e in spec.plugins] if SC4_BUNDLE else None
    if r:
        assert filter_graph(r) == "lv2=p=http\\\\://plugin.org.uk/swh-plugins/sc4:c=ratio=4|threshold=-12.5,volume=2"


# --- rendering with SC4 ----------------------------------------------------------------------------


@needs_swh
def test_sc4_compresses_by_its_ratio_as_ladspa_and_as_lv2(ref, compressed):
    loud, quiet = levels(ref.samples)
    assert loud - quiet == pytest.approx(D, abs=0.2)
    for name in ("ladspa r4", "lv2 r4"):
        r = ok(compressed[name])
        assert r.offset == 0 and r.samples.shape == ref.samples.shape and r.timings["plugins"] > 0
        out_loud, out_quiet = levels(r.samples)
        assert out_loud - out_quiet == pytest.approx(D / 4, abs=TOL_DB), name
        assert D - (out_loud - out_quiet) >= D * (1 - 1 / 4) - TOL_DB, name  # shrunk by at least 11 dB
        assert out_loud < loud - 10  # gain reduction: (T - d)(1 - 1/R) is about -18 dB on the loud part
    # the same DSP code in two plugin formats
    assert np.abs(ok(compressed["ladspa r4"]).samples - ok(compressed["lv2 r4"]).samples).max() < 1e-5


@needs_swh
def test_sc4_ratio_1_leaves_the_signal(ref, compressed):
    """Ratio 1: gain 0 dB. SC4 computes its gain through approximate dB/linear conversions (swh's
    ladspa-util tables) and starts it at 0, reaching it within 3 samples: from sample 16 on, every
    sample within 1e-4 of itself relatively (0.001 dB; measured 2.2e-5), the whole gain within 0.001 dB."""
    r = ok(compressed["lv2 r1"])
    x, y = ref.samples[16:].astype(np.float64), r.samples[16:].astype(np.float64)
    assert np.all(np.abs(y - x) <= 1e-4 * np.abs(x) + 1e-7)
    assert 20 * np.log10(np.sum(x * y) / np.sum(x * x)) == pytest.approx(0.0, abs=0.001)
    assert np.subtract(*levels(r.samples)) == pytest.approx(np.subtract(*levels(ref.samples)), abs=0.01)


@needs_swh
def test_chain_order_matters(ref, compressed):
    _, quiet = levels(ref.samples)
    _, comp_quiet = levels(ok(compressed["lv2 r4"]).samples)
    gain_first, comp_first = ok(compressed["gain, comp"]), ok(compressed["comp, gain"])
    # -20 dB first: the quiet part (-44 dB) is below the threshold and leaves the compressor as it came in
    assert levels(gain_first.samples)[1] == pytest.approx(quiet - 20, abs=0.1)
    # the compressor first: its quiet output, 20 dB down
    assert levels(comp_first.samples)[1] == pytest.approx(comp_quiet - 20, abs=0.05)
    assert levels(gain_first.samples)[1] - levels(comp_first.samples)[1] > 3
    assert gain_first.spec.label == "volume + sc4" and comp_first.spec.label == "sc4 + volume"


@needs_swh
@needs_pedalboard
def test_a_mixed_chain_is_rendered_stage_by_stage(ref):
    [spec] = parse_variants(
        [
            {
                "plugins": [
                    {"pedalboard": "Gain", "parameters": {"gain_db": -20}},
                    ladspa(**SC4_LADSPA, c4=4),
                    {"pedalboard": "Gain", "parameters": {"gain_db": 20}},
                ],
                "codec": "flac",
            }
        ]
    )
    assert spec.label == "flac + Gain + sc4 + Gain"
    r = render(ref, spec)
    loud, quiet = levels(ref.samples)
    out_loud, out_quiet = levels(r.samples)
    assert out_quiet == pytest.approx(quiet, abs=0.1)  # below the threshold at -44 dB: -20 + 20 dB
    assert out_loud < loud - 1  # -28 dB is above it: compressed
    version = r.encoder_version
    assert version.index("pedalboard") < version.index("ladspa sc4_1882.so") < version.rindex("pedalboard")
    assert {"plugins", "encode", "decode"} <= set(r.timings)


# --- pedalboard ----------------------------------------------------------------------------------


@needs_pedalboard
def test_pedalboard_builtin_compressor(ref):
    """A built-in effect by class name, parameters by name. (No VST3 plugin binary ships here:
    Debian packages none, so loading a real .vst3 is not tested.)"""
    [spec] = parse_variants(
        [{"plugins": [{"pedalboard": "Compressor",
                       "parameters": {"threshold_db": -30, "ratio": 4, "attack_ms": 1.5, "release_ms": 20}}]}]
    )  # fmt: skip
    r = ok(render_all(ref, [spec])[0])
    out_loud, out_quiet = levels(r.samples)
    assert out_loud - out_quiet == pytest.approx(D / 4, abs=TOL_DB)
    assert r.offset == 0
    assert "; plugins: pedalboard 0.9.26 Compressor" in r.encoder_version


@needs_pedalboard
def test_pedalboard_names_are_checked_before_rendering():
    [typo, param] = parse_variants(
        [{"plugins": [{"pedalboard": "Compresor"}]},
         {"plugins": [{"pedalboard": "Compressor", "parameters": {"treshold_db": -20}}]}]
    )  # fmt: skip
    with pytest.raises(EncoderUnavailable, match=r"no built-in effect 'Compresor' \(did you mean 'Compressor'\?\)"):
        encoder_version(typo)
    with pytest.raises(EncoderUnavailable, match=r"no parameter 'treshold_db' \(did you mean 'threshold_db'\?\)"):
        encoder_version(param)


@needs_pedalboard
def test_a_file_that_is_not_a_plugin_is_a_recorded_failure(ref, tmp_path):
    junk = tmp_path / "junk.vst3"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    specs = parse_variants([{"plugins": [{"pedalboard": str(junk)}]}, {"effects": "volume=-1dB"}])
    bad, good = render_all(ref, specs)
    assert isinstance(bad, EncoderFailed) and isinstance(good, RenderedVariant)
    assert f"element 1 ({junk})" in bad.reason and "Failed to load plugin as VST3Plugin" in bad.reason
    assert "VST3" in bad.hint and bad.row()["error"] == "EncoderFailed" and bad.item == "loud-quiet"
    # its version names the file's sha256 all the same (the file exists; what it is shows when loaded)
    assert f"junk.vst3 sha256:{hashlib.sha256(junk.read_bytes()).hexdigest()[:12]}" in encoder_version(specs[0])


@needs_swh
@needs_pedalboard
def test_pedalboard_cannot_load_lv2_bundles_here(ref):
    """pedalboard 0.9.26 loads VST3 on Linux (and Audio Units on macOS), not LV2 or LADSPA
    (spotify/pedalboard#240): the SC4 LV2 bundle fails with this error. Use lv2/ladspa elements."""
    [spec] = parse_variants([{"plugins": [{"pedalboard": str(SC4_BUNDLE)}]}])
    [err] = render_all(ref, [spec])
    assert isinstance(err, EncoderFailed)
    assert "Failed to load plugin as VST3Plugin" in err.reason and "unsupported plugin format" in err.reason
    assert "not LV2 or LADSPA" in err.hint


def _compile_plugin(tmp_path: Path, name: str, body: str) -> Path:
    """A VST3-shaped bundle whose binary runs ``body`` when loaded (a constructor function)."""
    if CC is None:
        pytest.skip("needs a C compiler to build the crashing and hanging plugins")
    src = tmp_path / f"{name}.c"
    head = "#include <signal.h>\n#include <unistd.h>\n"
    src.write_text(head + f"__attribute__((constructor)) static void init(void) {{ {body} }}\n")
    bundle = tmp_path / f"{name}.vst3"
    binary = bundle / "Contents" / "x86_64-linux" / f"{name}.so"
    binary.parent.mkdir(parents=True)
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(binary), str(src)], check=True, timeout=60)
    return bundle


@needs_pedalboard
def test_a_crashing_plugin_is_a_variant_error(ref, tmp_path):
    bundle = _compile_plugin(tmp_path, "Crash", "raise(SIGSEGV);")
    specs = parse_variants([{"plugins": [{"pedalboard": str(bundle)}]}, {"effects": "anull"}])
    crash, good = render_all(ref, specs)
    assert isinstance(crash, EncoderFailed) and isinstance(good, RenderedVariant)
    assert "pedalboard process running Crash was killed by signal 11 (SIGSEGV): a plugin crashed" in crash.reason


@needs_pedalboard
def test_a_hanging_plugin_times_out(ref, tmp_path):
    bundle = _compile_plugin(tmp_path, "Hang", "for (;;) pause();")
    specs = parse_variants([{"plugins": [{"pedalboard": str(bundle)}]}, {"effects": "anull"}])
    encoder_version(specs[0])  # pedalboard's info, asked once per process, outside the timed part
    start = time.perf_counter()
    hang, good = render_all(ref, specs, timeout=2.0)
    assert time.perf_counter() - start < 2.0 + 3.0
    assert isinstance(hang, EncoderTimeout) and isinstance(good, RenderedVariant)
    assert "pedalboard process running Hang did not finish within 2 s and was killed" in hang.reason


def test_pedalboard_is_not_imported_in_the_bench_process(tmp_path):
    code = (
        "import sys\n"
        "from jndqa.variants import parse_variants, encoder_version\n"
        "[s] = parse_variants([{'plugins': [{'pedalboard': 'Gain', 'parameters': {'gain_db': -3}}]}])\n"
        "try:\n    encoder_version(s)\nexcept Exception as e:\n    print(type(e).__name__)\n"
        "print('pedalboard' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "False", r.stdout + r.stderr


# --- versions --------------------------------------------------------------------------------------


@needs_swh
def test_version_names_the_binary_and_controls_change_only_the_id():
    lv2_r2, lv2_r4, ladspa_r4 = parse_variants(
        [{"plugins": [lv2(ratio=2)]}, {"plugins": [lv2(ratio=4)]}, {"plugins": [ladspa(c4=4)]}]
    )
    binary = SC4_BUNDLE / "plugin-linux.so"
    v2, v4 = encoder_version(lv2_r2), encoder_version(lv2_r4)
    assert f"sha256:{hashlib.sha256(binary.read_bytes()).hexdigest()[:12]}" in v4
    assert f"lv2 <{SC4_URI}> sc4-swh.lv2/plugin-linux.so" in v4 and "swh-lv2=" in v4  # dpkg -S knows it
    assert v2 == v4 and lv2_r2.id != lv2_r4.id  # the control is in the spec, the binary in the version
    v = encoder_version(ladspa_r4)
    assert f"ladspa sc4_1882.so sc4 sha256:{hashlib.sha256(SC4_SO.read_bytes()).hexdigest()[:12]}" in v
    assert "swh-plugins=" in v and "libavfilter" in v


@needs_swh
def test_a_rebuilt_plugin_is_a_new_version(ref, compressed, tmp_path, monkeypatch):
    """A copy of the SC4 bundle, found through LV2_PATH, with a changed binary (bytes appended) and
    makeup_gain's default raised from 0 to 6 dB in its plugin.ttl: another sha256 and ttl digest, no
    Debian package, and the sound 6 dB louder, which shows that ffmpeg's lilv loaded the copy too."""
    copy = tmp_path / "lv2" / "sc4-swh.lv2"
    shutil.copytree(SC4_BUNDLE, copy)
    with open(copy / "plugin-linux.so", "ab") as f:
        f.write(b"\0rebuilt\0")
    ttl = (copy / "plugin.ttl").read_text()
    head, tail = ttl.split('"makeup_gain"', 1)
    assert ":default 0.0" in tail
    (copy / "plugin.ttl").write_text(head + '"makeup_gain"' + tail.replace(":default 0.0", ":default 6.0", 1))
    [spec] = parse_variants([{"plugins": [lv2(**SC4, ratio=4)]}])
    system = encoder_version(spec)
    monkeypatch.setenv("LV2_PATH", str(tmp_path / "lv2"))
    assert lv2_path() == [str(tmp_path / "lv2")]
    rebuilt = encoder_version(spec)
    assert "swh-lv2=" in system and "swh-lv2=" not in rebuilt
    assert f"sha256:{hashlib.sha256((copy / 'plugin-linux.so').read_bytes()).hexdigest()[:12]}" in rebuilt
    assert re.search(r"ttl:(\w+)", system).group(1) != re.search(r"ttl:(\w+)", rebuilt).group(1)
    r = render(ref, spec)
    assert r.encoder_version == rebuilt
    before, after = levels(ok(compressed["lv2 r4"]).samples), levels(r.samples)
    assert after[0] - before[0] == pytest.approx(6.0, abs=0.1) and after[1] - before[1] == pytest.approx(6.0, abs=0.1)


@needs_swh
def test_a_ladspa_path_with_filter_graph_specials(ref, tmp_path):
    """A path with ' , [ ] ; : and spaces reaches ffmpeg's ladspa filter intact (escaping)."""
    folder = tmp_path / "we'ird, [dir]; a:b"
    folder.mkdir()
    shutil.copy(SC4_SO, folder / "sc4 copy.so")
    element = {"ladspa": "./we'ird, [dir]; a:b/sc4 copy.so", "name": "sc4", "controls": {**SC4_LADSPA, "c4": 4}}
    [spec] = parse_variants([{"plugins": [element]}], base_dir=tmp_path)
    r = render(ref, spec)
    assert "ladspa sc4 copy.so sc4 sha256:" in r.encoder_version
    assert np.subtract(*levels(r.samples)) == pytest.approx(D / 4, abs=TOL_DB)


# --- missing plugins and bad controls ---------------------------------------------------------------


@needs_swh
def test_missing_plugins_are_variant_errors_with_the_fix(ref):
    specs = parse_variants(
        [
            {"plugins": [{"lv2": "http://plugin.org.uk/swh-plugins/sc5"}]},
            {"plugins": [{"ladspa": "sc4_1883", "name": "sc4"}]},
            {"plugins": [{"pedalboard": "/nonexistent/Comp.vst3"}]},
            {"plugins": [lv2(**SC4, ratio=4)]},
        ]
    )
    with pytest.raises(EncoderUnavailable) as info:
        encoder_version(specs[0])  # as plan_night asks it: a recorded failure, the night goes on
    err = info.value
    assert err.spec_id == specs[0].id and err.row()["error"] == "EncoderUnavailable"
    assert "LV2 plugin <http://plugin.org.uk/swh-plugins/sc5> was not found" in err.reason
    assert "/usr/lib/lv2" in err.reason and "close URIs installed: http://plugin.org.uk/swh-plugins/sc4" in err.reason
    assert "apt install swh-lv2" in err.hint and "apt install swh-lv2" in err.row()["reason"]
    lv2_err, ladspa_err, vst_err, good = render_all(ref, specs, workers=2)
    assert isinstance(lv2_err, EncoderUnavailable) and isinstance(good, RenderedVariant)
    assert (
        isinstance(ladspa_err, EncoderUnavailable) and "sc4_1883.so was not found in LADSPA_PATH" in ladspa_err.reason
    )
    assert "/usr/lib/ladspa" in ladspa_err.reason and "apt install swh-plugins" in ladspa_err.hint
    assert isinstance(vst_err, EncoderUnavailable) and "/nonexistent/Comp.vst3" in vst_err.reason


@needs_swh
def test_unknown_and_out_of_range_controls(ref):
    specs = parse_variants([{"plugins": [lv2(ratoi=4)]}, {"plugins": [lv2(ratio=50)]}, {"plugins": [ladspa(c9=1)]}])
    typo, too_big, no_such = render_all(ref, specs)
    assert isinstance(typo, EncoderFailed) and "has no control 'ratoi' (did you mean 'ratio'?)" in typo.reason
    assert "ratio (1..20)" in typo.hint and "makeup_gain (0..24)" in typo.hint
    assert isinstance(too_big, EncoderFailed) and "control ratio=50 is out of its range 1..20" in too_big.reason
    assert isinstance(no_such, EncoderFailed) and "has no control 'c9'" in no_such.reason
