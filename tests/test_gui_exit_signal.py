"""Ctrl-C and SIGTERM on the knob panel: `python main.py` (offscreen, no sound card: its own dummy JACK
server and the demo input) ends with 130 / 143 after its clean-up, every time.

The handler used to quit the application inside whatever Python code it interrupted, nearly always a
meter poll: the window closed and freed the engine's shared memory under that poll (status 139), and
the clean-up never ran (the next panel found the dying server's name taken: "jackd exited with 255")."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("PyQt6")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = 4  # per signal; a burst each time, started at a different point of the meters' 33 ms poll period
UP_TIMEOUT_S = 90.0
# the panel's own server, by a name of its own (another test's server is not taken for the sound card),
# the same every run: JACK keeps 8 server names per machine, and a server killed uncleanly holds its
# name's entry until a server of that name starts again
SERVER = "rt-exitsig"

pytestmark = pytest.mark.skipif(not (shutil.which("jackd") and shutil.which("jack_lsp")),
                                reason="jackd2 not installed (scripts/setup.sh)")


def _jack_env() -> dict:
    return dict(os.environ, JACK_DEFAULT_SERVER=SERVER, JACK_NO_START_SERVER="1")


def _ports() -> str:
    return subprocess.run(["jack_lsp"], env=_jack_env(), capture_output=True, text=True, timeout=10).stdout


def _children(pid: int) -> dict[int, str]:
    """pid -> command line of ``pid``'s children."""
    out = {}
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    out[int(d)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):  # not a process, or gone meanwhile
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _end(pids) -> None:
    """End what a run left behind (a dying server kept the next one from starting: jackd exited with 255)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)


def _one_run(sig: int, run: int, tmp_path) -> str | None:
    """Start the panel, signal it once it plays, return what went wrong (None: nothing)."""
    from realtime.io.jackserver import server_running

    log = tmp_path / f"panel-{sig}-{run}.log"
    env = _jack_env() | {"QT_QPA_PLATFORM": "offscreen", "RTAUDIO_HOST_CONFIG": str(tmp_path / f"{run}.ini")}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "main.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while "rt-demo:" not in _ports():  # the engine plays and the demo input is wired in
            if proc.poll() is not None or time.monotonic() > deadline:
                return f"run {run}: the panel did not come up (status {proc.poll()}): {log.read_text()[-1500:]}"
            time.sleep(0.1)
        ours = {p: c for p, c in _children(proc.pid).items() if "resource_tracker" not in c}  # it outlives us
        time.sleep(0.2 + 0.011 * run)
        for _ in range(15):  # a burst over three poll periods: the first lands in a poll, the rest in the clean-up
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                break
            time.sleep(0.007)
        status = proc.wait(60)
    finally:
        if proc.poll() is None:  # it never came up, or never ended
            left = _children(proc.pid)
            proc.kill()
            proc.wait()
            _end(left)
    text = log.read_text()
    left = {p: c for p, c in ours.items() if _alive(p)}
    problems = []
    if status != 128 + sig:
        problems.append(f"status {status}")
    if "Traceback" in text or "Fatal Python error" in text:
        problems.append("a traceback")
    if left:
        problems.append(f"left running: {sorted(left.values())}")
    if server_running(name=SERVER):
        problems.append(f"JACK server {SERVER} still answers")
    _end(left)
    return f"run {run}: {', '.join(problems)}: {text[-1500:]}" if problems else None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT], ids=["SIGINT", "SIGTERM", "SIGQUIT"])
def test_a_signal_ends_the_panel_with_its_status_after_its_clean_up(sig, tmp_path):
    failed = [f for f in (_one_run(sig, run, tmp_path) for run in range(RUNS)) if f]
    assert not failed, f"{len(failed)} of {RUNS} runs went wrong:\n" + "\n".join(failed)


def test_a_closed_engine_process_host_reads_nothing_from_its_freed_rings():
    """The meter poll's readers after ``close`` (which unmaps the rings' shared memory): None, where
    they read the unmapped memory (a segfault; in a process of its own, so that would not end the tests)."""
    script = ("from gui.remote import RemoteEngineHost; from realtime.dsp.presets import load_preset\n"
              "h = RemoteEngineHost(load_preset('default'))\n"
              "h.close()\n"
              "print(h.read_meters(), h.read_readouts(), h.read_audio())\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_jack_env(), capture_output=True, text=True,
                       timeout=120)
    assert (r.returncode, r.stdout.split()) == (0, ["None", "None", "None"]), r.stderr[-2000:]
