"""Presets at their edges (review 49): each test fails on the code before its fix."""
import json

import pytest


# ---------------------------------------------------------------- the no-screen fallback's last preset
@pytest.mark.parametrize("stem", ['Bob\'s "warm" voice, take 2', "back\\slash", "tab\there"])
def test_the_no_screen_fallback_reads_the_last_preset_as_the_panel_wrote_it(tmp_path, monkeypatch, capsys, stem):
    """QSettings escapes a quote, a backslash, a control character and a leading "@" in the ini it
    writes; the headless fallback read the value as written (quotes stripped only) and ran the
    default preset: "the last preset (…\\"warm\\"…) could not be loaded … file not found"."""
    pytest.importorskip("PyQt6")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    import main
    from gui.settings import Settings

    mine = tmp_path / f"{stem}.json"
    mine.write_text(json.dumps({"version": 1, "name": "mine", "chain": []}))
    ini = tmp_path / "rtaudio-host.ini"
    monkeypatch.setenv("RTAUDIO_HOST_CONFIG", str(ini))
    settings = Settings(ini)
    settings.last_preset = str(mine)
    del settings  # (QSettings writes the file when it goes)
    monkeypatch.setattr(main, "_no_screen", lambda: "no screen")
    ran = []
    monkeypatch.setattr(main, "cmd_run", lambda a: ran.append(a.preset) or 0)
    assert main.main(["gui"]) == 0
    assert ran == [str(mine)], capsys.readouterr().err


# ---------------------------------------------------------------- the panel's Save As
@pytest.mark.parametrize("name, proposed", [("AC/DC tone", "AC-DC tone.json"), (".hidden", "hidden.json"),
                                            ("/", "-.json"), ("mine.JSON", "mine.JSON")])
def test_save_as_proposes_a_file_in_the_users_folder_whatever_the_presets_name(window, tmp_path, monkeypatch,
                                                                              name, proposed):
    """A preset whose name holds a "/" (a file's "name": "AC/DC tone") had Save As propose
    presets/AC/DC tone.json: the dialog, finding no folder "AC", opened in the working directory
    and proposed "DC tone.json" there (saved outside the user's folder, under another name); one
    named ".hidden" proposed a hidden file, which Save As then refused."""
    pytest.importorskip("pytestqt")
    from PyQt6.QtWidgets import QFileDialog

    from realtime.dsp.presets import load_preset

    p = load_preset("default")
    p["name"] = name
    w = window(p)
    asked = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        staticmethod(lambda parent, title, where, *a: (asked.append(where), (where, ""))[1]))
    assert w._guard(w._save_dialog), w.errors
    folder = tmp_path / "presets"
    assert asked == [str(folder / proposed)]
    assert [f.name for f in folder.iterdir()] == [proposed] and w.preset_path == str(folder / proposed)


# ---------------------------------------------------------------- a read-only preset file
def test_a_read_only_preset_file_is_not_saved_over(tmp_path):
    """``chmod a-w mine.json`` did not protect it: the atomic writer renamed a new file over it (and
    as root, or through a link, the same). Now an OSError naming it, the file as it was, no
    temporary file left."""
    import os

    from realtime.dsp.presets import load_preset, save_preset

    mine = tmp_path / "mine.json"
    save_preset(load_preset("default"), mine)
    before = mine.read_bytes()
    mine.chmod(0o444)
    (tmp_path / "link.json").symlink_to(mine)
    changed = load_preset("clean")
    for target in (mine, tmp_path / "link.json"):
        with pytest.raises(PermissionError, match="read-only") as e:
            save_preset(changed, target)
        assert e.value.filename == str(target)
    assert mine.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["link.json", "mine.json"]
    save_preset(changed, tmp_path / "other.json")  # (another name saves)


def test_the_panels_save_over_a_read_only_preset_says_so_and_keeps_the_changes(window, tmp_path):
    pytest.importorskip("pytestqt")
    from realtime.dsp.presets import load_preset, save_preset

    folder = tmp_path / "presets"
    folder.mkdir()
    mine = save_preset(load_preset("default"), folder / "mine.json")
    before = mine.read_bytes()
    mine.chmod(0o444)
    w = window(load_preset(mine), preset_path=str(mine))
    w.rack.strips["limiter"].controls["ceiling_db"].setValue(-7.0)
    assert w.modified
    assert not w._guard(w._save)
    assert w.errors == [f"cannot save the preset {mine}: the file is read-only; save under another name"]
    assert w.modified and mine.read_bytes() == before and [f.name for f in folder.iterdir()] == ["mine.json"]


def test_a_builtins_own_file_opened_by_its_path_is_the_builtin_and_never_saved_over(window, tmp_path):
    """File > Open of realtime/dsp/presets/default.json (or --preset that path) made it the file Ctrl+S
    wrote to: the shipped preset was overwritten."""
    pytest.importorskip("pytestqt")
    from realtime.dsp.presets import BUILTIN_DIR, resolve_preset

    shipped = BUILTIN_DIR / "default.json"
    assert resolve_preset(str(shipped)) == (shipped, "builtin") and resolve_preset(shipped)[1] == "builtin"
    link = tmp_path / "mine.json"
    link.symlink_to(shipped)
    assert resolve_preset(link)[1] == "builtin" and resolve_preset(str(tmp_path / "other.json"))[1] == "file"
    before = shipped.read_bytes()
    w = window("master")
    w.load_preset_file(str(shipped))
    assert w.preset_path is None and w.host.name == "default"
    w.rack.strips["limiter"].controls["ceiling_db"].setValue(-7.0)
    asked = []
    w._save_dialog = lambda: asked.append(True) or False  # Save goes to Save As (cancelled here)
    assert not w._save() and asked and shipped.read_bytes() == before


@pytest.mark.parametrize("data, said", [
    (b"\xff\xfe{\x00}\x00", "not UTF-8 text, as a preset's JSON is (byte 0: b'\\xff\\xfe{\\x00')"),  # Notepad's UTF-16
    (b'{"version": 2.0, "name": "x", "chain": []}', "written by a newer release"),
])
def test_a_utf16_or_newer_preset_is_said_as_such(tmp_path, data, said):
    from realtime.dsp.presets import PresetError, load_preset

    (tmp_path / "p.json").write_bytes(data)
    with pytest.raises(PresetError, match=None) as e:
        load_preset(tmp_path / "p.json")
    assert said in str(e.value)
