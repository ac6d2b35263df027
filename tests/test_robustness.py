"""Bad input, faults and signals end in one clear line and lose nothing (issue: nothing crashes it).

Every case runs the real command line in a child process, as a user would, and checks the exit
status, that stderr is one line without a traceback, and what is (not) left on disk.
"""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def run(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _wait_for_numba(p: subprocess.Popen, step: float, timeout: float = 30) -> None:
    """Until process ``p`` has loaded numba (its own start-up under way), it ended, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if "numba" in Path(f"/proc/{p.pid}/maps").read_text():
                return
        except OSError:
            pass
        time.sleep(step)


def one_line_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "in.wav"
    t = np.arange(48000 * 2) / 48000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t))[:, None].repeat(2, 1).astype(np.float32), 48000)
    return path


def test_no_screen_falls_back_to_the_headless_demo_before_qt_is_touched(tmp_path):
    """`./run.sh` on a headless machine: the demo, on a private JACK server (even while another runs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["JACK_DEFAULT_SERVER"] = "rtnoscreen"
    r = subprocess.run([sys.executable, str(ROOT / "main.py")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "no screen" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "demo_out.wav").is_file()
    assert "measured round trip" in r.stdout


def test_a_second_setup_run_installs_nothing():
    """./run.sh after ./test.sh (and the reverse) must not reinstall: the stamp covers a subset."""
    for args in ([], ["--dev"]):
        r = subprocess.run(["bash", "scripts/setup.sh", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "installing" not in r.stdout, r.stdout


def test_a_failed_pip_install_fails_the_setup_and_marks_nothing(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "broken"\nversion = "0"\ndependencies = ["rtaudio-no-such-package-xyz==0.0.0"]\n'
        '[project.optional-dependencies]\ncpu = []\ngpu = []\ngui = []\n')
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    # pip from this venv, run inside the new one
    (tmp_path / ".venv" / "bin" / "pip").write_text(f"#!/bin/sh\nexec {sys.executable} -m pip --python "
                                                    f"{tmp_path}/.venv/bin/python \"$@\"\n")
    (tmp_path / ".venv" / "bin" / "pip").chmod(0o755)
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "pip install failed" in r.stderr
    assert not list((tmp_path / ".venv").glob(".setup-*"))


def test_compressed_input_gets_a_sensible_output_encoding(tmp_path, wav):
    mp3 = tmp_path / "in.mp3"
    x, sr = sf.read(wav)
    sf.write(mp3, x, sr, format="MP3")
    out = tmp_path / "out.wav"
    r = run("process", str(mp3), str(out), "--preset", "clean", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sf.info(out).subtype == "PCM_24"


def test_disk_full_says_so_and_leaves_nothing(small_disk, wav):
    out = small_disk / "out.wav"
    line = one_line_error(run("process", str(wav), str(out), "--preset", "clean", "--no-progress"))
    assert "no space left on device" in line and str(out) in line
    assert os.listdir(small_disk) == []


def test_a_full_disk_is_said_as_one_whatever_the_space_left_once_the_part_file_is_gone(three_mb_disk, tmp_path):
    """libsndfile says a full disk as a bare "System error"; the space left was looked at only after
    the temporary file was removed, which gave the space back: on a disk with more than a megabyte
    under the output, `process`, `synth` and `batch` (files side by side) said "System error." (or
    "LibsndfileError: System error.") instead of "no space left on device"."""
    src = tmp_path / "long.wav"
    sf.write(src, (0.1 * np.random.default_rng(0).standard_normal((48000 * 20, 2))).astype(np.float32), 48000)
    out = three_mb_disk / "out.wav"
    line = one_line_error(run("process", str(src), str(out), "--preset", "clean", "--no-progress"))
    assert line == f"error: no space left on device while writing {out}; nothing was written", line
    import mido

    song = tmp_path / "long.mid"
    mf = mido.MidiFile()
    mf.tracks.append(tr := mido.MidiTrack())
    for i in range(40):  # 40 notes of half a second: 20 s
        tr.append(mido.Message("note_on", note=60 + i % 12, velocity=90, time=0))
        tr.append(mido.Message("note_off", note=60 + i % 12, velocity=0, time=480))
    mf.save(str(song))
    out = three_mb_disk / "song.wav"
    r = run("synth", str(song), str(out))
    assert r.returncode == 2 and f"error: no space left on device while writing {out}; nothing was written" in r.stderr
    src = tmp_path / "batch"
    src.mkdir()
    for i in range(2):
        sf.write(src / f"f{i}.wav", (0.1 * np.random.default_rng(i).standard_normal((48000 * 10, 2))), 48000,
                 subtype="PCM_16")
    r = run("batch", str(src), "--out", str(three_mb_disk / "b"), "--preset", "voice", "--jobs", "1", "--no-progress")
    failures = json.loads(r.stdout)["failures"]
    assert failures and all(f["error"] == f"no space left on device while writing "
                            f"{three_mb_disk / 'b' / Path(f['input']).name}; nothing was written"
                            for f in failures), failures
    assert not [p for p in three_mb_disk.rglob("*") if p.name.endswith(".part")]


def test_a_full_disk_under_ogg_vorbis_is_caught_although_libsndfile_says_nothing(small_disk, wav):
    """With a few KB left, libsndfile wrote a Vorbis file of 0 or 4096 bytes without an error: the
    command said it had written it, over the good file that was there. The output must read back
    whole before it replaces anything."""
    out = small_disk / "out.ogg"
    x, sr = sf.read(wav, frames=48000)
    short = wav.parent / "one_second.wav"  # short enough that Vorbis holds it all until it closes
    sf.write(short, x, sr)
    sf.write(out, x[:2400], sr, format="OGG", subtype="VORBIS")  # a good file that must survive
    before = out.read_bytes()
    st = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize))  # nothing left
    line = one_line_error(run("process", str(short), str(out), "--preset", "clean", "--no-progress"))
    assert "no space left on device" in line and str(out) in line
    assert out.read_bytes() == before and sorted(os.listdir(small_disk)) == ["filler", "out.ogg"]


def test_a_ray_address_with_nobody_there_fails_at_once(tmp_path, wav):
    """Ray itself retries such an address for minutes; the batch says so in one line and makes nothing."""
    r = run("batch", str(wav), "--out", str(tmp_path / "out"), "--ray", "127.0.0.1:1", timeout=60)
    assert one_line_error(r) == "error: cannot reach a Ray cluster at 127.0.0.1:1: Connection refused"
    assert not (tmp_path / "out").exists()
    from realtime.errors import OfflineError
    from realtime.run.ray_batch import probe

    with pytest.raises(OfflineError, match=r"cannot reach a Ray cluster at \[::1\]:1") as e:
        probe("[::1]:1")  # an IPv6 address in brackets is the host ::1, not a name to look up
    assert "not known" not in str(e.value)


def test_read_only_destination_is_refused_up_front(read_only_dir, wav):
    line = one_line_error(run("process", str(wav), str(read_only_dir / "out.wav"), "--no-progress"))
    assert "read-only" in line and ".part" not in line


def test_an_output_that_is_a_folder_is_refused_before_any_processing(tmp_path, wav):
    from realtime.dsp.presets import build_chain, load_preset
    from realtime.errors import OfflineError
    from realtime.run.offline import process_file

    chain = build_chain(load_preset("clean"))
    calls = []
    real = chain.process
    chain.process = lambda b: (calls.append(1), real(b))
    with pytest.raises(OfflineError, match="is a folder"):
        process_file(wav, tmp_path, chain, progress=False)
    assert not calls


@pytest.mark.parametrize("args", [["-b", "0"], ["-b", "-5"], ["-r", "0"], ["-r", "-48000"], ["-b", "x"],
                                  ["--preset", "delimit", "-r", "8000"]])
def test_bad_numbers_are_refused_with_one_line(tmp_path, wav, args):
    r = run("process", str(wav), str(tmp_path / "o.wav"), "--no-progress", *args, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o.wav").exists()


def _wait_for_part(folder: Path, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not list(folder.glob(f".{name}.*.part")):
        time.sleep(0.05)
    assert list(folder.glob(f".{name}.*.part")), "processing never started"


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129),
                                      (signal.SIGQUIT, 131)])  # Ctrl-\ dumped core and left the .part behind
def test_a_signal_mid_file_leaves_nothing_half_written(tmp_path, sig, code):
    src = tmp_path / "long.wav"
    sf.write(src, (0.1 * np.random.default_rng(0).standard_normal((48000 * 120, 2))).astype(np.float32), 48000)
    out = tmp_path / "out.wav"
    p = subprocess.Popen([sys.executable, "main.py", "process", str(src), str(out), "--preset", "voice",
                          "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_part(tmp_path, "out.wav")
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert f"interrupted; {out} not written" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out.wav.*"))


def test_ctrl_c_during_start_up_says_one_word(tmp_path):
    src = tmp_path / "in.wav"
    # noise, not silence: the enhancer holds its state through digital silence, and 30 s of it ran
    # through in a fraction of a second, sometimes before the poll below saw the start-up at all
    noise = 0.1 * np.random.default_rng(0).standard_normal((48000 * 60, 2))
    sf.write(src, noise.astype(np.float32), 48000, subtype="PCM_16")
    p = subprocess.Popen([sys.executable, "main.py", "process", str(src), str(tmp_path / "o.wav"), "--preset",
                          "voice", "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    _wait_for_numba(p, step=0.01)  # the command runs (its heavy imports have started), still starting up
    assert p.poll() is None, "the command ended before the test could interrupt its start-up"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err and "Traceback" not in err, err


def test_an_interrupt_whose_exception_went_missing_still_stops_the_file(tmp_path, wav, capsys):
    """C code that clears errors (an import under way) can swallow the KeyboardInterrupt a signal raised;
    the handler also remembers the signal, and the file loop raises it again: nothing is written."""
    from main import main
    from realtime import errors

    errors.note_interrupt("SIGTERM")
    try:
        assert main(["process", str(wav), str(tmp_path / "o.wav"), "--no-progress"]) == 143
    finally:
        errors._Pending.signal = None
    assert "interrupted;" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists() and not list(tmp_path.glob(".o.wav.*"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_command_ended_keeps_its_status(sig):
    """A signal in the last moments of a run, after the command returned (its output committed),
    used to kill the shutting-down interpreter by that signal (status -2, no word); now the process
    ends at once with the command's own status."""
    code = ("import os, signal, sys, time\n"
            "import main\n"
            "main._finish_on_signals(3)\n"
            "print('done', flush=True)\n"
            f"os.kill(os.getpid(), {int(sig)})\n"
            "time.sleep(30)\n"
            "sys.exit(0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert r.returncode == 3 and r.stdout == "done\n" and "Traceback" not in r.stderr, r


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_the_caller_ignored_stays_ignored(sig):
    """Under ``nohup`` (SIGHUP ignored) or ``trap '' TERM`` a long command must run on: the command's
    handlers used to replace the ignore and end it at the first hang-up."""
    code = ("import os, signal, time\n"
            f"signal.signal({int(sig)}, signal.SIG_IGN)\n"
            "from realtime.errors import interrupt_on_signals\n"
            "interrupt_on_signals()\n"
            f"os.kill(os.getpid(), {int(sig)})\n"
            "time.sleep(0.2)\n"
            "print('ran on', flush=True)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and r.stdout == "ran on\n", r


def test_stale_part_files_of_the_same_output_are_cleaned(tmp_path, wav):
    stale = tmp_path / ".out.wav.abcd1234.part"
    stale.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    other = tmp_path / ".other.wav.abcd1234.part"
    other.write_bytes(b"x")
    os.utime(other, (old, old))
    r = run("process", str(wav), str(tmp_path / "out.wav"), "--preset", "clean", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and other.exists()


def test_an_output_name_near_the_length_limit_is_written(tmp_path, wav):
    """A 250-byte file name is legal; its temporary name (the name plus ~15 characters) was not."""
    out = tmp_path / ("é" * 122 + "[x].wav")  # 251 bytes, with glob characters
    r = run("process", str(wav), str(out), "--preset", "clean", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == sorted([wav.name, out.name])
    assert sf.info(out).frames == sf.info(wav).frames


def test_absurd_midi_length_is_refused_at_once(tmp_path):
    mid = tmp_path / "huge.mid"
    # one track: a note-on after a delta of 0x0FFFFFFF ticks (the largest variable-length value)
    track = bytes([0xFF, 0xFF, 0xFF, 0x7F, 0x90, 60, 100, 0x00, 0xFF, 0x2F, 0x00])
    mid.write_bytes(b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
                    + (96).to_bytes(2, "big") + b"MTrk" + len(track).to_bytes(4, "big") + track)
    assert len(mid.read_bytes()) < 40
    line = one_line_error(run("synth", str(mid), str(tmp_path / "o.wav"), timeout=60))
    assert "refusing to render more than 6 hours" in line
    assert not list(tmp_path.glob("*.wav")) and not list(tmp_path.glob(".o.wav*"))


def test_an_empty_midi_file_says_why_it_is_unreadable(tmp_path):
    mid = tmp_path / "empty.mid"
    mid.write_bytes(b"")
    line = one_line_error(run("synth", str(mid), str(tmp_path / "o.wav"), timeout=60))
    assert line == f"error: {mid}: not a readable MIDI file (it ends too early)"
    assert os.listdir(tmp_path) == ["empty.mid"]


def test_synth_render_memory_does_not_grow_with_the_song(tmp_path):
    """Rendered block by block to the file: a three times longer song costs no more memory."""
    import tracemalloc

    import mido

    from realtime.dsp.presets import build_chain, load_preset
    from realtime.run.offline import render_midi

    def song(seconds: int) -> Path:
        mf = mido.MidiFile(ticks_per_beat=480)
        tr = mido.MidiTrack()
        mf.tracks.append(tr)
        for i in range(seconds):  # one note a second (120 bpm: 960 ticks)
            tr.append(mido.Message("note_on", note=60 + i % 12, velocity=90, time=0 if i == 0 else 480))
            tr.append(mido.Message("note_off", note=60 + i % 12, velocity=0, time=480))
        path = tmp_path / f"s{seconds}.mid"
        mf.save(str(path))
        return path

    peaks = []
    for seconds in (6, 18):
        chain = build_chain(load_preset("synth"))
        render_midi(song(2), tmp_path / "warm.wav", chain)  # models loaded, kernels compiled
        tracemalloc.start()
        render_midi(song(seconds), tmp_path / "o.wav", chain)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert sf.info(tmp_path / "o.wav").duration > 17.5  # the song (its last note-off at 17.5 s) and a release
    assert peaks[1] < peaks[0] * 1.3 + (1 << 20), peaks  # a whole song in memory would triple it


def test_pathological_presets_are_refused_quickly(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"version": 1, "name": "x", "chain": ' + "[" * 100000 + "]" * 100000 + "}")
    assert "nested too deeply" in one_line_error(run("process", "x.wav", "y.wav", "--preset", str(deep)))
    many = tmp_path / "many.json"
    many.write_text('{"version": 1, "name": "x", "chain": [' + ",".join(['{"processor": "gain"}'] * 10000) + "]}")
    assert "at most" in one_line_error(run("process", "x.wav", "y.wav", "--preset", str(many)))


def test_slot_ids_are_assigned_in_linear_time():
    from realtime.dsp.presets import validate_preset

    p = validate_preset({"version": 1, "name": "x", "chain": [{"processor": "gain"}] * 200})
    ids = [s["id"] for s in p["chain"]]
    assert ids[:3] == ["gain", "gain2", "gain3"] and ids[199] == "gain200" and len(set(ids)) == len(ids)


def test_outputs_get_the_usual_file_mode(tmp_path, wav):
    old = os.umask(0o022)
    try:
        out = tmp_path / "out.wav"
        assert run("process", str(wav), str(out), "--preset", "clean", "--no-progress").returncode == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        out.chmod(0o640)
        assert run("process", str(wav), str(out), "--preset", "clean", "--no-progress").returncode == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_devices_without_a_server_prints_no_library_noise():
    r = run("devices", env={"JACK_DEFAULT_SERVER": "rt-no-such-server"})
    assert r.returncode == 0
    assert r.stderr.strip() == "", r.stderr
    assert "Audio devices" in r.stdout


def test_demo_honours_seconds_and_writes_the_formats_its_files_name(tmp_path):
    """The demo's output and a live recording are written as their extensions say (both used to
    be float WAV whatever the name); an extension nothing can write is refused before the run."""
    out, rec = tmp_path / "demo.flac", tmp_path / "take.ogg"
    r = run("run", "--demo", "--seconds", "1.5", "--demo-out", str(out), "--record", str(rec),
            env={"JACK_DEFAULT_SERVER": "rtsecs"})
    assert r.returncode == 0, r.stderr
    assert 1.5 <= sf.info(out).duration < 2.5  # 1.5 s of demo plus the recorder's half-second tail
    assert (sf.info(out).format, sf.info(out).subtype) == ("FLAC", "PCM_24")
    assert (sf.info(rec).format, sf.info(rec).subtype) == ("OGG", "VORBIS") and sf.info(rec).duration >= 1.0
    line = one_line_error(run("run", "--demo", "--seconds", "1", "--demo-out", str(tmp_path / "d.wav"),
                              "--record", str(tmp_path / "take.xyz"), env={"JACK_DEFAULT_SERVER": "rtsecs"}))
    assert "unknown output format '.xyz'" in line
    assert not (tmp_path / "d.wav").exists()


def test_a_truncated_wav_is_processed_with_a_warning(tmp_path, wav):
    cut = tmp_path / "cut.wav"
    data = wav.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header still promises the whole length
    r = run("process", str(cut), str(tmp_path / "o.wav"), "--preset", "clean", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "header promises" in r.stderr


def test_a_killed_private_server_leaves_no_shared_memory_behind():
    """jackd killed with SIGKILL keeps ~100 MB in /dev/shm; the next start (or stop) frees it."""
    from realtime.io.jackserver import SHM, DummyJackServer, _segments

    server = DummyJackServer(48000, 256, name="rtshmkill").start()
    pid = server.proc.pid
    note = SHM / f"rtaudio-jackd-{pid}.json"
    assert note.is_file()
    mine = {name: (SHM / name).stat().st_ino for name in json.loads(note.read_text())}
    assert mine and mine.items() <= _segments().items()
    server.kill()
    assert all((SHM / name).exists() for name in mine)  # SIGKILL: jackd could not clean up
    again = DummyJackServer(48000, 256, name="rtshmkill").start()
    try:
        for name, inode in mine.items():  # gone, or a new segment of the new server under that name
            assert not (SHM / name).exists() or (SHM / name).stat().st_ino != inode
        assert not note.exists()
    finally:
        again.stop()
    assert not (SHM / f"rtaudio-jackd-{again.proc.pid if again.proc else 0}.json").exists()


def test_setup_waits_for_a_busy_package_manager(tmp_path):
    """A fresh machine running apt-daily holds apt's locks: `apt-get update` failed at once ("Could not
    get lock /var/lib/apt/lists/lock"), which DPkg::Lock::Timeout does not cover and flock(1) cannot
    see. Set-up says it waits and tries again; apt-get always gets DEBIAN_FRONTEND (sudo's env_reset
    dropped the exported one, and jackd2's debconf question then waited on a hidden stdout). apt-get
    is a recording stand-in here that finds the lists lock held once."""
    if not shutil.which("dpkg-query"):
        pytest.skip("not a Debian machine with dpkg")
    (tmp_path / "scripts").mkdir()
    script = (ROOT / "scripts" / "setup.sh").read_text().replace("APT_PKGS=(", "APT_PKGS=(rtaudio-test-missing ", 1)
    (tmp_path / "scripts" / "setup.sh").write_text(script)
    (tmp_path / "pyproject.toml").write_text("")
    bin_dir, calls, held = tmp_path / "bin", tmp_path / "apt-calls", tmp_path / "held-once"
    bin_dir.mkdir()
    held.write_text("")
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$DEBIAN_FRONTEND $@" >> {calls}\n'
        f'if [ -e {held} ]; then rm {held}; '
        'echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2; exit 100; fi\n')
    (bin_dir / "apt-get").chmod(0o755)
    r = subprocess.run(["bash", "scripts/setup.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert "waiting for it" in r.stderr and "held by process 4242" in r.stderr, (r.stdout, r.stderr)  # progress: stderr
    lines = calls.read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["update", "update", "install"], lines  # the update again
    assert all(line.startswith("noninteractive ") for line in lines), lines
    assert "rtaudio-test-missing" in lines[-1]


def test_a_file_name_that_is_not_utf8_is_read_and_written(tmp_path, wav):
    """A Latin-1 name from an old archive (not valid UTF-8: Python keeps it as surrogates) used to
    end in a UnicodeEncodeError traceback inside soundfile, as input and as output."""
    src = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav")
    out = os.fsdecode(bytes(tmp_path) + b"/out-\xe9.flac")
    shutil.copy(wav, src)
    r = run("process", src, out, "--preset", "clean", "--no-progress")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert sf.info(os.fsencode(out)).frames == sf.info(wav).frames


def test_a_cut_flac_is_processed_up_to_where_it_breaks(tmp_path, wav):
    """A FLAC cut in the middle: libsndfile fails mid-stream ("decoder lost sync"). What was there
    is processed and the warning says how much (it used to be reported as a failed write of the
    output, the input never named, and nothing was written)."""
    full = tmp_path / "full.flac"
    sf.write(full, sf.read(wav)[0], 48000, subtype="PCM_16")
    cut = tmp_path / "cut.flac"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o.wav"
    r = run("process", str(cut), str(out), "--preset", "clean", "--no-progress")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert f"warning: {cut}: the file ended after" in r.stderr
    assert sf.info(out).frames == sf.info(cut).frames  # the missing end as silence, the length kept


def test_a_sigterm_just_after_the_output_was_committed_keeps_status_0(tmp_path, wav):
    """A SIGTERM in the last ~200 ms of a run, after its JSON line (the output committed), used to
    kill the exiting interpreter by the signal (status -15): Python had put SIGTERM back to its
    default early in its teardown."""
    for delay in (0.02, 0.1):
        p = subprocess.Popen([sys.executable, "main.py", "process", str(wav), str(tmp_path / "o.wav"), "--preset",
                              "clean", "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        assert json.loads(p.stdout.readline())["frames"] == 96000
        time.sleep(delay)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, (delay, p.stderr.read())


def test_opus_is_written_at_its_rates_and_refused_with_one_line_at_others(tmp_path, wav):
    """.opus was read but never written ("unknown output format"), so a batch over Opus files
    failed on every one. At 48 kHz it is written; 44.1 kHz audio is refused before any work."""
    src = tmp_path / "in.opus"
    sf.write(src, sf.read(wav)[0], 48000, format="OGG", subtype="OPUS")
    out = tmp_path / "out.opus"
    r = run("process", str(src), str(out), "--preset", "clean", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sf.info(out).format == "OGG" and sf.info(out).subtype == "OPUS" and sf.info(out).frames > 90000
    low = tmp_path / "in44.wav"
    sf.write(low, np.zeros((4410, 2), np.float32), 44100)
    line = one_line_error(run("process", str(low), str(tmp_path / "o44.opus"), "--no-progress"))
    assert line == f"error: {tmp_path / 'o44.opus'}: Opus holds only 8/12/16/24/48 kHz audio and the input is 44100 Hz; " \
                   "write .flac"  # not .ogg: Vorbis has its own limit (192 kHz)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.opus", "in.wav", "in44.wav", "out.opus"]


def test_a_preset_that_is_an_endless_or_huge_file_is_refused_without_reading_it_whole(tmp_path, wav):
    """``--preset`` given a device or a recording by mistake: the file was read whole before its
    size was checked (/dev/zero: until memory ran out)."""
    line = one_line_error(run("process", str(wav), str(tmp_path / "o.wav"), "--preset", "/dev/zero", timeout=60))
    from realtime.dsp.presets import MAX_PRESET_BYTES

    assert line == f"error: /dev/zero: too large for a preset (more than {MAX_PRESET_BYTES} bytes)"
    assert not (tmp_path / "o.wav").exists()


def test_an_output_that_is_a_link_is_written_through_it(tmp_path, wav):
    """out.wav -> library/take.wav: the processed audio lands in the link's target and the link
    stays (the rename used to replace the link with a plain file, the target never written)."""
    lib = tmp_path / "library"
    lib.mkdir()
    target = lib / "take.wav"
    sf.write(target, np.zeros((10, 2), np.float32), 48000)
    link = tmp_path / "out.wav"
    link.symlink_to(target)
    r = run("process", str(wav), str(link), "--preset", "clean", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and sf.info(target).frames == sf.info(wav).frames
    assert sorted(p.name for p in lib.iterdir()) == ["take.wav"]  # no temporary file left beside it


def test_a_python_m_entry_point_says_user_errors_in_one_line(capsys):
    """run_cli: what main.py does for its commands, for the recipes', trainers' and benchmarks'
    own entry points: a refusal or an OS error a user can act on is one `error:` line (status 2),
    an interrupt one word (130, 143 for SIGTERM); a bug keeps its traceback."""
    from realtime.errors import Interrupted, run_cli

    def refuses(argv=None):
        raise SystemExit("--steps 0: at least 1")

    def cannot_write(argv=None):
        raise PermissionError(13, "Permission denied", "/ro/out")

    def stopped(argv=None):
        raise Interrupted("SIGTERM")

    def bug(argv=None):
        raise ZeroDivisionError("division by zero")

    assert run_cli(refuses, []) == 2 and capsys.readouterr().err == "error: --steps 0: at least 1\n"
    assert run_cli(cannot_write, []) == 2 and capsys.readouterr().err == "error: /ro/out: permission denied\n"
    assert run_cli(stopped, []) == 143 and capsys.readouterr().err == "interrupted\n"
    assert run_cli(lambda argv=None: 0, []) == 0
    with pytest.raises(ZeroDivisionError):
        run_cli(bug, [])


def test_a_trainers_refusal_through_main_py_is_an_error_line_with_status_2():
    r = run("train", "delimiter", "--false-weight", "1", "--steps", "1", timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == "error: --false-weight needs --wave-threshold DB (the curve as the processor plays it)"


def test_sigterm_to_a_python_m_entry_point_runs_its_clean_up_and_says_143():
    """run_cli takes SIGTERM and SIGHUP as main.py does (an interrupt, so the same clean-up runs):
    a recipe or benchmark killed by a service manager said nothing and left its files."""
    p = subprocess.Popen([sys.executable, "-m", "bench.jitter", "--seconds", "60"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_numba(p, step=0.05)  # once its loop runs, not during the imports
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 143 and err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err, err


@pytest.mark.parametrize("args,says", [
    (["--prefill-blocks", "1000000000000"], "prefill_blocks 1000000000000: the pre-fill is 1 to "),  # 1 PiB, a traceback
    (["--prefill-blocks", "100000"], "the pre-fill is 1 to 750 blocks (2 s) at 128 frames"),  # "measured round trip: 0 frames"
    (["--demo", "--seconds", "20000"], "the demo plays at most 600 s"),  # 7 GiB, a traceback
])
def test_absurd_run_lengths_are_one_line_before_anything_starts(tmp_path, capsys, args, says):
    import main

    assert main.main(["run", "--demo-out", str(tmp_path / "d.wav"), *args]) == 2
    out, err = capsys.readouterr()
    assert err.strip().count("\n") == 0 and says in err, err
    assert out == ""  # not "Demo mode: …" before the refusal
    assert list(tmp_path.iterdir()) == []


def test_no_sound_card_and_no_server_is_said_in_words():
    """`synth --live` with nothing to play on said "no output device None (Error querying device -1)"."""
    cards = Path("/proc/asound/cards")
    if cards.exists() and "no soundcards" not in cards.read_text():
        pytest.skip("this machine has a sound card")
    r = run("synth", "--live", "--seconds", "1", env={"JACK_DEFAULT_SERVER": "rt-nowhere", "JACK_NO_START_SERVER": "1"},
            timeout=60)
    line = one_line_error(r)
    assert "no audio output device: no sound card and no JACK server running" in line and "None" not in line


@pytest.mark.jack
def test_a_ctrl_c_swallowed_in_start_up_still_stops_the_demo(tmp_path, capsys):
    """A Ctrl-C during Numba's compiling was printed as "Exception ignored … KeyboardInterrupt"; the demo
    then played to its end and exited 0 (1 run in 8). The remembered signal stops it once start-up is over."""
    from main import main
    from realtime import errors

    errors.note_interrupt("SIGINT")  # what the handler records when its exception goes missing
    assert main(["run", "--demo", "--seconds", "3", "--demo-out", str(tmp_path / "d.wav")]) == 130
    assert errors._Pending.signal is None  # forgotten once the command ended
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "d.wav").exists()


def test_run_sh_takes_paths_relative_to_where_it_is_called(tmp_path, wav):
    """`./run.sh` changed into the repository first: `run.sh process song.wav out.wav` from one's own
    folder said "song.wav: no such file" (and a recording or demo_out.wav landed in the repository)."""
    shutil.copy(wav, tmp_path / "song.wav")
    r = subprocess.run(["bash", str(ROOT / "run.sh"), "process", "song.wav", "out.wav", "--preset", "clean",
                        "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sf.info(tmp_path / "out.wav").frames == sf.info(wav).frames


@pytest.mark.parametrize("args", [("presets",), ("plugins",), ("bench", "processor", "--json")])
def test_a_reader_that_leaves_ends_the_command_quietly(args):
    """`main.py plugins | head -1` said "error: Broken pipe" and exited 2, as if the user had erred."""
    p = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the first line
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.wait(120) == 128 + signal.SIGPIPE and err == "", err
