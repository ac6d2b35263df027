"""The panel on a real X server: Xvfb with Qt's xcb platform (the desktop path), in a subprocess."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

pytest.importorskip("PyQt6")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = r"""
import json, sys
from PyQt6.QtWidgets import QApplication
from PyQt6.QtTest import QTest
app = QApplication(sys.argv[:1])
from gui.host import EngineHost
from gui.settings import Settings
from gui.window import MainWindow
from realtime.dsp.presets import load_preset
p = load_preset("default")
w = MainWindow(p, settings=Settings(sys.argv[1]), host=EngineHost(p))  # engine not started: the display is tested
w.show()
exposed = QTest.qWaitForWindowExposed(w, 10000)
QTest.qWait(200)
shot = w.screen().grabWindow(w.winId())  # pixels read back from the X server
ok = shot.save(sys.argv[2])
print(json.dumps({"platform": app.platformName(), "exposed": exposed, "saved": ok,
                  "size": [shot.width(), shot.height()], "strips": list(w.rack.strips)}))
w.shutdown()
"""


def _free_display() -> int:
    for n in range(91, 200):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display number")


@pytest.fixture
def xvfb():
    exe = shutil.which("Xvfb")
    if not exe:
        pytest.skip("Xvfb not installed (scripts/setup.sh installs xvfb on Debian)")
    n = _free_display()
    proc = subprocess.Popen([exe, f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{n}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Xvfb :{n} did not start (exit {proc.poll()})")
        time.sleep(0.05)
    yield f":{n}"
    proc.terminate()
    proc.wait(5)


def test_window_opens_under_xvfb_with_xcb(xvfb, tmp_path, artifacts_dir):
    shot = os.path.join(artifacts_dir, "gui_main_window_xvfb.png")
    env = dict(os.environ, DISPLAY=xvfb, QT_QPA_PLATFORM="xcb", PYTHONPATH=ROOT, JACK_NO_START_SERVER="1")
    env.pop("WAYLAND_DISPLAY", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "s.ini"), shot], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["platform"] == "xcb" and out["exposed"] and out["saved"]
    assert out["size"][0] >= 800 and out["size"][1] >= 400
    assert out["strips"] == ["hpf", "gain", "limiter", "meter", "safety"]
    assert os.path.getsize(shot) > 10_000
