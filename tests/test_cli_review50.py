"""Review 50: the command line's user-facing edges."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import main


# ---------------------------------------------------------------------------- QT_QPA_PLATFORM lists
@pytest.fixture
def screen_env(monkeypatch, tmp_path):
    """No display of any kind set; XDG_RUNTIME_DIR a folder of the test's own."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    for var in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY", "DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return monkeypatch


def test_a_platform_list_opens_the_panel_where_its_second_plugin_can(screen_env, tmp_path):
    """QT_QPA_PLATFORM="xcb;wayland" (a list Qt tries in turn): with no X server but a compositor,
    Qt opens the window on Wayland; the command line said "no screen" and ran headless."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as compositor:
        compositor.bind(str(tmp_path / "wayland-7"))
        compositor.listen(8)  # each check connects, none is accepted
        screen_env.setenv("WAYLAND_DISPLAY", "wayland-7")
        for listed in ("xcb;wayland", "XCB;Wayland", "xcb;;wayland"):
            screen_env.setenv("QT_QPA_PLATFORM", listed)
            assert main._no_screen() is None, listed
        screen_env.setenv("QT_QPA_PLATFORM", "xcb")  # xcb alone still cannot
        assert "DISPLAY is not set" in main._no_screen()


def test_a_platform_list_none_of_whose_plugins_can_says_why_for_each(screen_env):
    screen_env.setenv("QT_QPA_PLATFORM", "wayland;xcb")
    reason = main._no_screen()
    assert "WAYLAND_DISPLAY is not set" in reason and "DISPLAY is not set)" in reason.split(";", 1)[1]
    screen_env.setenv("QT_QPA_PLATFORM", "wayland;offscreen")
    assert main._no_screen() is None


def test_wayland_first_falls_back_to_a_reachable_x_server(screen_env):
    xvfb = shutil.which("Xvfb")
    free = next((d for d in range(150, 200) if not os.path.exists(f"/tmp/.X11-unix/X{d}")), None)
    if xvfb is None or free is None:
        pytest.skip("needs Xvfb")
    p = subprocess.Popen([xvfb, f":{free}", "-nolisten", "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/tmp/.X11-unix/X{free}") and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not os.path.exists(f"/tmp/.X11-unix/X{free}"):
            pytest.skip("Xvfb did not start")
        screen_env.setenv("DISPLAY", f":{free}")
        screen_env.setenv("QT_QPA_PLATFORM", "wayland;xcb")
        assert main._no_screen() is None
    finally:
        p.terminate()
        p.wait(10)



@pytest.mark.parametrize("missing", ["libxcb-cursor.so.0", "libxkbcommon-x11.so.0"])
def test_a_display_without_a_library_qts_xcb_plugin_needs_is_no_screen(screen_env, monkeypatch, missing):
    """Qt 6.5+ needs libxcb-cursor0 (not on a stock Ubuntu desktop) and the rest of its X11 list:
    one missing made `python main.py` abort in Qt ("Fatal Python error: Aborted", status 134), not
    fall back to the headless engine as a missing libxcb did."""
    import ctypes

    real = ctypes.CDLL
    for lib in main._QT_XCB_LIBS:
        try:
            real(lib)
        except OSError:
            pytest.skip(f"{lib} is not installed here (scripts/setup.sh)")

    def cdll(name, *a, **k):
        if name == missing:
            raise OSError(f"{name}: cannot open shared object file")
        return real(name, *a, **k)

    screen_env.setenv("DISPLAY", ":0")
    monkeypatch.setattr(ctypes, "CDLL", cdll)
    reason = main._no_screen()
    assert reason is not None and missing in reason, reason

# ---------------------------------------------------------------------------- setup.sh in a copied clone
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_in_clone(tmp_path, project_at: str) -> str:
    """Run scripts/setup.sh in a clone whose .venv (set up, stamp and all) has the project of
    ``project_at`` installed ("clone": its own; "other": the folder it was copied from). pip itself
    and the Debian packages are stand-ins: what setup.sh asks pip to do is returned."""
    import hashlib

    clone, other, fakebin = tmp_path / "clone", tmp_path / "other", tmp_path / "bin"
    for d in (clone / "scripts", clone / ".venv" / "bin", other, fakebin):
        d.mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "scripts", "setup.sh"), clone / "scripts")
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), clone)
    (clone / "main.py").write_text("")
    (other / "main.py").write_text("")
    python3 = shutil.which("python3")
    if python3 is None or shutil.which("flock") is None or shutil.which("sha1sum") is None:
        pytest.skip("needs python3, flock and sha1sum")
    venv = tmp_path / "venv"  # the interpreter the clone's .venv runs, with the project of `project_at` on its path
    subprocess.run([python3, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "project.pth").write_text(str((tmp_path / project_at).resolve()) + "\n")
    log = tmp_path / "pip.log"
    stub = clone / ".venv" / "bin" / "python"
    stub.write_text(f"""#!/usr/bin/env bash
[ "$1 $2" = "-m pip" ] && {{ echo "$*" >> '{log}'; exit 0; }}
case "$*" in *"import numba"*) exit 0;; esac
exec '{venv}/bin/python' "$@"
""")
    stub.chmod(0o755)
    key = hashlib.sha1((clone / "pyproject.toml").read_bytes()).hexdigest()[:12]
    (clone / ".venv" / f".setup-{key}").write_text("cpu\ngui\n")  # set up for run.sh: nothing to install
    (fakebin / "dpkg-query").write_text("#!/bin/sh\nprintf 'install ok installed'\n")
    (fakebin / "nvidia-smi").write_text("#!/bin/sh\nexit 1\n")
    for f in fakebin.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{fakebin}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(clone / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return (log.read_text() if log.exists() else "") + r.stderr


def test_setup_installs_nothing_where_the_venv_holds_this_folders_project(tmp_path):
    assert "install" not in _setup_in_clone(tmp_path, "clone")


def test_setup_installs_the_project_again_in_a_copied_clone(tmp_path):
    """`cp -a proj proj2`: proj2's .venv ran and its stamp said done, so nothing was installed,
    and `python -c 'import realtime'` outside proj2 (a test's subprocess, .venv/bin/rtaudio) ran proj's code."""
    said = _setup_in_clone(tmp_path, "other")
    assert "pip install" in said and " -e " in said, said
    assert "not of this folder" in said
