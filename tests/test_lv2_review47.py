"""LV2 hosting, review 47: URIDs mapped from two threads at once (two URIs got one number), plugins
that can never load offered in the Add box, a plugin's silent extra main inputs not said, and a
crash inside a plugin that left not one line. Each test failed before its fix."""
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from .test_lv2_ports import _need, _private_cache  # noqa: F401 (an autouse fixture: each test's own scan cache)

ROOT = Path(__file__).resolve().parents[1]
MBEQ = "http://plugin.org.uk/swh-plugins/mbeq"  # KNOWN_BROKEN
XFADE = "http://plugin.org.uk/swh-plugins/xfade"


def test_urids_mapped_from_two_threads_are_all_distinct():
    from realtime.io.lv2_host import UridTable

    table = UridTable()
    fn = table.map_struct.map  # the C function pointer plugins call
    got: dict[bytes, int] = {}
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        def worker(k):
            for i in range(20000):
                uri = f"urn:race:{k}:{i}".encode()
                got[uri] = fn(None, uri)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert len(set(got.values())) == len(got) == 40000
    assert all(table.unmap(i) == u.decode() for u, i in got.items())


def test_the_add_box_offers_only_plugins_this_host_loads():
    from gui.add_box import lv2_plugins
    from realtime.io.lv2_scan import scan

    _need(MBEQ)
    info = scan().plugins[MBEQ]
    assert info.refusal().startswith("known to be broken")
    uris = {uri for _, uri, _ in lv2_plugins()}
    assert MBEQ not in uris and XFADE in uris


def test_a_plugin_with_more_than_two_main_inputs_says_which_are_silent():
    from realtime.dsp import processors

    _need(XFADE)
    p = processors.create("lv2", uri=XFADE)
    p.prepare(48000, 256, 2)
    x = np.full((256, 2), 0.5, np.float32)
    p.process(x)
    assert p.adaptation == "stereo, inputs 3-4 silent"  # its B pair: said "stereo" alone


def test_a_crash_while_stderr_is_captured_still_says_where():
    """A plugin is made with descriptor 2 captured (its Turtle and printf noise): faulthandler's
    report of a segfault there went into the capture and was lost with the process."""
    code = ("import ctypes\n"
            "from realtime.io.native_stderr import capture_stderr, crash_stacks_to_stderr\n"
            "crash_stacks_to_stderr()\n"
            "with capture_stderr():\n"
            "    ctypes.string_at(0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == -11
    assert "Fatal Python error: Segmentation fault" in r.stderr and "<string>" in r.stderr, r.stderr
