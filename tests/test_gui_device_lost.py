"""The audio server vanishing under the running panel: the window says so and keeps running."""
import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("PyQt6")
pytestmark = pytest.mark.jack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = r"""
import json, sys, time
from PyQt6.QtWidgets import QApplication
app = QApplication(sys.argv[:1])
from gui.settings import Settings
from gui.window import MainWindow
from realtime.engine.config import EngineConfig
from realtime.dsp.presets import load_preset
w = MainWindow(load_preset("default"), EngineConfig(blocksize=256), Settings(sys.argv[1]))  # engine process
w.show()
w.start_button.click()
t0 = time.monotonic()
while w.host.status()["callbacks"] < 100 and time.monotonic() - t0 < 30:
    app.processEvents(); time.sleep(0.02)
print("ready", flush=True)
sys.stdin.readline()  # the server has been killed
t0 = time.monotonic()
while not any("lost" in e for e in w.errors) and time.monotonic() - t0 < 20:
    app.processEvents(); time.sleep(0.02)
print(json.dumps({"errors": w.errors, "running": w.host.running, "button": w.start_button.isChecked(),
                  "banner": w.banner.isVisible()}), flush=True)
w.shutdown()
"""


def test_server_killed_under_the_window_is_reported_not_a_crash(tmp_path):
    from realtime.io.jackserver import DummyJackServer

    name = "rtguikill"  # fixed: JACK reclaims a killed server's registry slot only for its name
    server = DummyJackServer(48000, 256, name=name).start()
    env = dict(os.environ, JACK_DEFAULT_SERVER=name, QT_QPA_PLATFORM="offscreen", PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "s.ini")], cwd=ROOT, env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = p.stdout.readline().strip()
        if line != "ready":
            p.kill()
            pytest.fail(f"panel did not start: {line!r} {p.stderr.read()[-3000:]}")
        time.sleep(0.5)
        server.kill()
        out, err = p.communicate("go\n", timeout=60)  # no hang on the dead stream
    finally:
        if p.poll() is None:
            p.kill()
        server.stop()
    assert p.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    rec = json.loads(out.strip().splitlines()[-1])
    assert rec["banner"] and any("lost" in e for e in rec["errors"]), rec
    assert not rec["running"] and not rec["button"]
