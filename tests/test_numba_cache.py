"""Numba's on-disk cache is keyed by the runtime's source, so an update never runs stale kernels.

Numba checks only the file a cached kernel is written in; a constant or a kernel it takes from
another module is baked in unchecked (the synth once played with old row numbers after a change
to voices.py alone). ``realtime`` points the cache at a folder named by a hash of its sources.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import realtime

RUNTIME = Path(realtime.__file__).resolve().parent
REPO = RUNTIME.parent


def _python(code: str, cwd: Path, env: dict[str, str]) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "REALTIME_NUMBA_BASE")}
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO)])
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=full, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _package(root: Path, k: int, step: int) -> None:
    pk = root / "pk"
    pk.mkdir(exist_ok=True)
    (pk / "__init__.py").write_text(textwrap.dedent("""
        from pathlib import Path
        import realtime
        realtime.use_keyed_numba_cache(Path(__file__).parent)
    """))
    (pk / "a.py").write_text(textwrap.dedent(f"""
        import numba
        K = {k}
        @numba.njit(cache=True)
        def helper(x):
            return x + {step}
    """))
    # b.py is written once and never touched again: only a.py changes, as in an update
    if not (pk / "b.py").exists():
        (pk / "b.py").write_text(textwrap.dedent("""
            import numba
            from .a import K, helper
            @numba.njit(cache=True)
            def f(x):
                return helper(x) * K
        """))


def test_a_change_to_another_module_reaches_a_cached_kernel(tmp_path):
    env = {"REALTIME_NUMBA_BASE": str(tmp_path / "cache")}
    _package(tmp_path, k=3, step=1)
    assert _python("from pk.b import f; print(f(1))", tmp_path, env) == "6"
    assert _python("from pk.b import f; print(f(1))", tmp_path, env) == "6"  # from the cache
    time.sleep(0.01)
    _package(tmp_path, k=5, step=100)
    assert _python("from pk.b import f; print(f(1))", tmp_path, env) == "505"  # in __pycache__: 6


def test_the_runtimes_kernels_are_cached_under_its_source_key(tmp_path):
    base = tmp_path / "cache"
    code = ("import os, realtime.engine.ring as r, numpy as np\n"
            "buf = np.zeros(64, np.float32); idx = np.zeros(16, np.int64)\n"
            "r.ring_writable(buf, idx)\n"
            "print(os.environ['NUMBA_CACHE_DIR']); print(r.ring_writable._cache._cache_path)")
    keyed, kernel_path = _python(code, REPO, {"REALTIME_NUMBA_BASE": str(base)}).splitlines()
    assert Path(keyed) == base / realtime.source_key(RUNTIME)
    assert Path(kernel_path).is_relative_to(keyed)
    assert any(Path(kernel_path).glob("ring.ring_writable-*.nbi"))


def test_the_key_follows_every_source_byte(tmp_path):
    copy = tmp_path / "realtime"
    shutil.copytree(RUNTIME, copy, ignore=shutil.ignore_patterns("__pycache__"))
    key = realtime.source_key(copy)
    assert key == realtime.source_key(RUNTIME)
    voices = copy / "dsp" / "processors" / "synth" / "voices.py"
    voices.write_text(voices.read_text() + "\n")
    assert realtime.source_key(copy) != key
    (copy / "dsp" / "processors" / "synth" / "notes.txt").write_text("not source")
    voices.write_text(voices.read_text()[:-1])
    assert realtime.source_key(copy) == key
    (copy / "extra.py").write_text("")
    assert realtime.source_key(copy) != key


def test_a_users_cache_folder_is_the_base_and_children_keep_it(tmp_path):
    mine = tmp_path / "mine"
    code = ("import os, subprocess, sys, realtime\n"
            "print(os.environ['NUMBA_CACHE_DIR'])\n"
            "child = 'import os, realtime; print(os.environ[\"NUMBA_CACHE_DIR\"])'\n"
            "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True).stdout.strip())")
    parent, child = _python(code, REPO, {"NUMBA_CACHE_DIR": str(mine)}).splitlines()
    assert Path(parent) == mine / realtime.source_key(RUNTIME)
    assert child == parent  # not <mine>/<key>/<key>


def test_a_new_key_removes_its_own_folders_unused_for_a_month(tmp_path):
    """Only keyed folders: a user's NUMBA_CACHE_DIR (the base then) holds other programs' caches under
    their source paths, whose top folders' times stay old while in use (they were removed)."""
    base = tmp_path / "cache"
    old, recent, other = base / "0000000000000000", base / "1111111111111111", base / "home"
    for d in (old, recent, other):
        (d / "sub").mkdir(parents=True)
    month = time.time() - 31 * 86400
    for d in (old, other):
        os.utime(d, (month, month))
    _python("import realtime", REPO, {"NUMBA_CACHE_DIR": str(base)})
    assert not old.exists()
    assert recent.exists() and (other / "sub").exists()
    assert (base / realtime.source_key(RUNTIME)).is_dir()


def test_a_user_without_a_home_gets_a_cache_in_the_temporary_folder(monkeypatch):
    """A container's numeric user (no HOME, no passwd entry): `import realtime` raised RuntimeError."""
    def no_home():
        raise RuntimeError("Could not determine home directory.")

    for var in ("REALTIME_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert realtime.cache_dir().name == f"realtime-host-{os.getuid()}"


def test_a_relative_xdg_cache_home_is_ignored_as_the_spec_says(monkeypatch, tmp_path):
    """XDG_CACHE_HOME=cache made a cache folder in whatever folder the program was started from."""
    monkeypatch.delenv("REALTIME_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "cache")
    assert realtime.cache_dir() == tmp_path / ".cache" / "realtime-host"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert realtime.cache_dir() == tmp_path / "xdg" / "realtime-host"
