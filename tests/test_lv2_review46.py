"""LV2 hosting, forty-sixth session."""
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from realtime.errors import PluginError

from .test_lv2_ports import _need, _private_cache  # noqa: F401 (an autouse fixture: each test's own scan cache)

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
GATE_MS = "http://lsp-plug.in/plugins/lv2/mb_gate_ms"  # Debian's LSP 1.2.5: off by up to 10,000 at 999 frames


def _preset(tmp_path, uri):
    import json

    p = tmp_path / "ms.json"
    p.write_text(json.dumps({"version": 1, "name": "ms", "chain": [{"id": "ms", "processor": "lv2", "uri": uri}]}))
    return p


def test_an_lsp_mid_side_plugin_renders_the_same_at_a_block_size_it_cannot_take(tmp_path):
    """LSP's mid/side plugins corrupt the last samples of a run that is not a multiple of 4 frames
    (`process -b 999`: junk silenced, the rest off by 0.5): offline the block is rounded up to one,
    said once, and the file comes out as at a block size it takes."""
    _need(GATE_MS)
    rng = np.random.default_rng(3)
    src = tmp_path / "in.wav"
    sf.write(src, (0.1 * rng.standard_normal((24000, 2))).astype(np.float32), 48000, subtype="FLOAT")
    preset = _preset(tmp_path, GATE_MS)
    outs = {}
    for b in (999, 1000):
        out = tmp_path / f"out{b}.wav"
        r = subprocess.run([sys.executable, "main.py", "process", str(src), str(out), "--preset", str(preset),
                            "-b", str(b)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert ("taken as 1000 frames" in r.stderr) == (b == 999), r.stderr
        assert "silence" not in r.stderr, r.stderr  # no junk replaced
        outs[b] = sf.read(out, dtype="float32")[0]
    assert np.array_equal(outs[999], outs[1000])


def test_a_live_block_size_a_plugin_cannot_take_is_refused_in_one_line():
    """Live, the engine's blocks are the size the user chose: one this plugin corrupts is refused,
    saying what to give, rather than played with junk in every block."""
    from realtime.dsp.processors import create

    _need(GATE_MS)
    p = create("lv2", uri=GATE_MS)
    with pytest.raises(PluginError, match="multiple of 4 frames.*not 99$"):
        p.prepare(48000, 99, 2)
    p.prepare(48000, 100, 2)  # a multiple of 4: taken
    block = (0.1 * np.random.default_rng(0).standard_normal((100, 2))).astype(np.float32)
    p.process(block)
    assert p.bad_output_samples == 0
    p.close()
