"""LV2 hosting, review 49: a plugin installed while a process ran was hidden from that process and,
through the scan cache it rewrote, from every later one. Each test failed before its fix."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realtime.io import lilv, lv2_scan

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = Path("/usr/lib/lv2")
AMP, ALAW = "http://plugin.org.uk/swh-plugins/amp", "http://plugin.org.uk/swh-plugins/alaw"
BUNDLES = ("atom.lv2", "core.lv2", "amp-swh.lv2")


@pytest.fixture
def lv2_dir(tmp_path, monkeypatch):
    """An LV2 path of its own holding swh amp, a cache of its own and worlds of its own."""
    if not lilv.available() or not all((SYSTEM / b).is_dir() for b in (*BUNDLES, "a_law-swh.lv2")):
        pytest.skip("lilv or swh-lv2 not installed")
    path = tmp_path / "lv2"
    path.mkdir()
    for b in BUNDLES:
        shutil.copytree(SYSTEM / b, path / b, symlinks=True)
    monkeypatch.setenv("LV2_PATH", str(path))
    monkeypatch.setenv("REALTIME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(lv2_scan, "_scans", {})
    monkeypatch.setattr(lv2_scan, "_worlds", {})
    if hasattr(lv2_scan, "_world_signatures"):
        monkeypatch.setattr(lv2_scan, "_world_signatures", {})
    return path


def _install_alaw(path: Path) -> None:
    shutil.copytree(SYSTEM / "a_law-swh.lv2", path / "a_law-swh.lv2", symlinks=True)


def _other_process_scan() -> list:
    r = subprocess.run([sys.executable, "-c", "from realtime.io import lv2_scan; print(sorted(lv2_scan.scan().plugins))"],
                       cwd=ROOT, capture_output=True, text=True, env=os.environ, timeout=120)
    assert r.returncode == 0, r.stderr
    return eval(r.stdout.strip())  # noqa: S307 - a list of strings printed by the line above


def test_a_plugin_installed_while_running_is_scanned_loaded_and_cached(lv2_dir):
    from realtime.dsp.processors import lv2

    assert sorted(lv2_scan.scan().plugins) == [AMP]
    lv2.plugin_class(AMP)().prepare(48000, 64, 1)  # the process's world is loaded and in use
    _install_alaw(lv2_dir)
    assert ALAW in lv2_scan.scan().plugins  # the world loaded before it was scanned: it was missing
    p = lv2.plugin_class(ALAW)()
    p.prepare(48000, 64, 1)
    x = np.full((64, 1), 0.25, np.float32)
    p.process(x)
    assert np.isfinite(x).all()
    p.close()
    # the cache written for the new signature holds it: every later process sees it
    assert _other_process_scan() == [ALAW, AMP]


def test_a_plugin_another_process_scanned_first_is_loaded_here(lv2_dir):
    from realtime.io import lv2_host

    assert sorted(lv2_scan.scan().plugins) == [AMP]
    inst = lv2_host.Instance(lv2_scan.world(), AMP, 48000, 64)
    _install_alaw(lv2_dir)
    assert _other_process_scan() == [ALAW, AMP]  # it wrote the cache for the new signature
    assert ALAW in lv2_scan.scan().plugins  # read from that cache...
    new = lv2_host.Instance(lv2_scan.world(), ALAW, 48000, 64)  # ...and loadable: "not installed" before
    new.close()
    inst.close()  # an instance of the world retired meanwhile still closes cleanly
