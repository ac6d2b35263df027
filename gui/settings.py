"""Remembered settings (audio devices, rate, block, MIDI port, last preset, window geometry and
split) in the platform config dir, and the dialog that edits the audio/MIDI ones."""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import replace
from pathlib import Path

from PyQt6.QtCore import QByteArray, QSettings
from PyQt6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel

from gui.midi import NONE, VIRTUAL, input_ports
from realtime.dsp.presets import APP, config_path  # noqa: F401 (APP: the name gui.app gives the application)
from realtime.engine.config import COMMON_RATES, EngineConfig, device_arg
from realtime.engine.engine import prefill_at_start
from realtime.io import portaudio

SAMPLERATES = COMMON_RATES
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048)
# Output pre-fill ("safety buffer"): blocks the DSP thread has to deliver each block. More rides
# out longer stalls of the machine at the price of one block of latency each.
PREFILL_CHOICES = (1, 2, 3, 4, 5, 6, 8)
DEFAULT_DEVICE = "Default"


def _unclosed_quote(path: Path) -> bool:
    """Whether a line of the ini file at ``path`` opens a quoted value it never closes (Qt then reads
    the lines after it into that value; a value Qt wrote with a line break in it is written escaped)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if not eq or key.lstrip().startswith((";", "#", "[")):
            continue
        quoted = escaped = False
        for ch in value:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = not quoted
            elif ch == ";" and not quoted:  # a comment
                break
        if quoted:
            return True
    return False


class Settings:
    """Typed access to a QSettings ini file."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else config_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.q = QSettings(str(self.path), QSettings.Format.IniFormat)
        self.problem: str | None = None  # one line for the window's banner: the file was damaged
        self._swallowed: set[str] = set()  # keys whose value swallowed the lines after it: read as defaults
        self._frozen = False  # nothing is written (the damaged file could not be copied aside)
        self._set_damage_aside()

    def _set_damage_aside(self) -> None:
        """A value whose quote is never closed (a hand edit) swallows every line after it, other
        sections too: Qt reads them as that one value, and the next save (every shutdown saves the
        window's place) writes the file back so. Such values read as defaults, and the file as it
        was is copied aside first, once: nothing of it is lost, and the banner says where it is.
        Where it cannot be copied (or rewritten), nothing is written to it at all."""
        if not _unclosed_quote(self.path):
            return
        self._swallowed = {k for k in self.q.allKeys() if isinstance(v := self.q.value(k), str) and "\n" in v}
        if not self._swallowed:
            return
        first = sorted(self._swallowed)[0]
        said = f"{self.path}: the value of {first} has no closing quote and swallowed the lines after it"
        import shutil

        aside = self.path.with_name(self.path.name + ".damaged")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.damaged{n}")
        frozen = f"{said}; they read as defaults, and settings are not saved until it is fixed by hand"
        try:
            shutil.copy2(self.path, aside)
        except OSError as e:
            self._frozen, self.problem = True, f"{frozen} (no copy could be kept: {e.strerror or e})"
            return
        for k in sorted(self._swallowed):
            self.q.remove(k)
        self.q.sync()
        if self.q.status() != QSettings.Status.NoError:
            self._frozen, self.problem = True, f"{frozen} (it cannot be written; a copy is kept as {aside})"
            return
        self.problem = f"{said}; they read as defaults now, the file as it was is kept as {aside}"

    def _put(self, key: str, value) -> None:
        """Write ``key`` (and the file), unless the file is left alone (``_frozen``)."""
        if self._frozen:
            return
        self._swallowed.discard(key)
        self.q.setValue(key, value)

    def _sync(self) -> None:
        if not self._frozen:
            self.q.sync()

    @property
    def preset_dir(self) -> Path:
        """The user's saved presets (the picker lists them, the file dialogs open there): beside
        this settings file."""
        return self.path.parent / "presets"

    def _get(self, key, default, typ=str):
        v = self.q.value(key, default) if key not in self._swallowed else default
        if isinstance(v, list):  # an unquoted comma in a hand-edited ini ("hw:0,0") splits the value
            v = ",".join(map(str, v))
        try:
            return typ(v) if v is not None else default
        except (TypeError, ValueError):
            return default

    # audio
    def engine_config(self, base: EngineConfig | None = None) -> EngineConfig:
        b = base or EngineConfig()
        sr = self._get("audio/samplerate", b.samplerate, int)
        bs = self._get("audio/blocksize", b.blocksize, int)
        ind, outd = self._get("audio/input_device", ""), self._get("audio/output_device", "")
        ind = device_arg(ind) if ind else b.input_device  # (device 0 is a device)
        outd = device_arg(outd) if outd else b.output_device
        pre = self._get("audio/prefill_blocks", b.prefill_blocks, int)
        return EngineConfig(samplerate=sr if sr in SAMPLERATES else b.samplerate,
                            blocksize=bs if bs in BLOCKSIZES else b.blocksize, channels=b.channels, mode=b.mode,
                            input_device=ind, output_device=outd,
                            prefill_blocks=pre if pre in PREFILL_CHOICES else b.prefill_blocks)

    def save_engine_config(self, c: EngineConfig) -> None:
        self._put("audio/samplerate", c.samplerate)
        self._put("audio/blocksize", c.blocksize)
        self._put("audio/prefill_blocks", c.prefill_blocks)
        self._put("audio/input_device", "" if c.input_device is None else str(c.input_device))
        self._put("audio/output_device", "" if c.output_device is None else str(c.output_device))
        self._sync()

    @property
    def midi_port(self) -> str:
        return self._get("midi/port", NONE)

    @midi_port.setter
    def midi_port(self, name: str) -> None:
        self._put("midi/port", name)
        self._sync()

    @property
    def last_preset(self) -> str:
        return self._get("preset/last", "")

    @last_preset.setter
    def last_preset(self, ref: str) -> None:
        self._put("preset/last", ref)
        self._sync()

    def geometry(self):
        """The window's ``saveGeometry``, or None: anything else (a hand-edited "geometry=hello")
        would make restoreGeometry raise at start-up."""
        v = self.q.value("window/geometry")
        return v if isinstance(v, (QByteArray, bytes)) else None

    def save_geometry(self, data) -> None:
        self._put("window/geometry", data)
        self._sync()

    def pane_sizes(self) -> list[int] | None:
        """The window's rack / spectrum / synth panel heights as last saved, or None (none saved, or
        a hand-edited value that is no list of sizes)."""
        v = self.q.value("window/panes")
        try:
            sizes = [int(x) for x in (v if isinstance(v, list) else [])]
        except (TypeError, ValueError):
            return None
        return sizes if sizes and all(0 <= x <= 1 << 20 for x in sizes) else None

    def save_pane_sizes(self, sizes: list[int]) -> None:
        self._put("window/panes", [str(x) for x in sizes])
        if not self._frozen:
            self.q.remove("window/splitter")  # (a QSplitter state, saved until 2026-12-06)
        self._sync()


# JACK clients of the host itself, no audio devices: the engine's PortAudio stream (a second one
# is renamed "PortAudio-01" by the server) and the demo player (gui.demo_source) with its probe
OWN_CLIENTS = ("PortAudio", "rt-demo", "rt-demo-probe")


def own_client(name: str) -> bool:
    """Whether a device ``name`` is one of the host's own JACK clients (``OWN_CLIENTS``)."""
    return any(name == c or (name.startswith(c + "-") and name[len(c) + 1:].isdigit()) for c in OWN_CLIENTS)


def device_names(devices, kind: str) -> list[str]:
    """Names of ``devices`` (PortAudio's device dicts) with input (kind="input") or output
    channels, less the host's own JACK clients (the engine, the demo player)."""
    key = "inputs" if kind == "input" else "outputs"
    return [d["name"] for d in devices if d[key] > 0 and not own_client(d["name"])]


# the dialog's own release: tests that fake the device list stub the module's, and a PortAudio left
# open here aborts the process at exit once the audio server is gone (see audio_devices)
_release_portaudio = portaudio.release


def audio_devices() -> dict[str, list[str]]:
    """Names of devices with input and with output channels (``{"input": [...], "output": [...]}``),
    from one fresh PortAudio scan (``device_names``). PortAudio is released again: the engine runs in
    its own process, and a PortAudio left open here would abort this process at exit if the audio
    server died meanwhile."""
    from realtime.io.portaudio import list_devices, release, rescan

    try:
        rescan()
        devices = list_devices()
        return {kind: device_names(devices, kind) for kind in ("input", "output")}
    finally:
        release()


def device_rates(input_device, output_device, config: EngineConfig) -> list[int]:
    """The rates of SAMPLERATES the devices run (``None``: the default device) with ``config``'s
    channels, in each direction its mode uses, as PortAudio answers (a JACK device: the server's
    rate only). All of them when it runs none (a device gone, or too few channels): the engine's
    refusal then says why. PortAudio is released again unless this process had it open already
    (an engine in this process)."""
    directions = [(kind, dev) for kind, dev, used in (("input", input_device, config.mode != "output"),
                                                      ("output", output_device, config.mode != "input")) if used]
    already = getattr(sys.modules.get("sounddevice"), "_initialized", 0)
    try:
        s = portaudio.sd()
        rates = [r for r in SAMPLERATES if all(_runs(getattr(s, f"check_{kind}_settings"), dev, config.channels, r)
                                               for kind, dev in directions)]
    finally:
        if not already:
            _release_portaudio()
    return rates or list(SAMPLERATES)


def jack_period(output_device, config: EngineConfig) -> int | None:
    """The JACK server's period, in frames, when the engine's stream on ``output_device`` (``None``:
    the default one) would be a JACK stream, as the engine finds it at its start; else None (an
    input-only stream, another host API, a device gone). PortAudio is released again unless this
    process had it open already, as for ``device_rates``."""
    if config.mode == "input":  # no output: no pre-fill for a period to raise
        return None
    try:
        with _portaudio_open():
            s = portaudio.sd()
            api = s.query_devices(output_device, "output")["hostapi"]
            jack = s._lib.Pa_GetHostApiInfo(api).type == s._lib.paJACK  # the engine's test (_is_jack_stream)
    except Exception:  # noqa: BLE001 - no such device: the engine's refusal says why
        return None
    if not jack:
        return None
    from realtime.io.jackio import server_period

    return server_period()


@contextlib.contextmanager
def _portaudio_open():
    """PortAudio open meanwhile, for ``device_rates`` and ``jack_period`` to share one start; released
    again after unless this process had it open already."""
    already = getattr(sys.modules.get("sounddevice"), "_initialized", 0)
    try:
        if not already:
            portaudio.sd()
        yield
    finally:
        if not already:
            _release_portaudio()


def _runs(check, device, channels: int, rate: int) -> bool:
    try:
        check(device=device, channels=channels, dtype="float32", samplerate=rate)
    except Exception:  # noqa: BLE001 - refused, or no such device: not offered
        return False
    return True


class SettingsDialog(QDialog):
    """The audio devices, rate, block size, safety buffer and MIDI input. The rates offered are those
    the chosen devices run (``device_rates``), again whenever a device choice changes."""

    def __init__(self, config: EngineConfig, midi_port: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Audio and MIDI settings")
        form = QFormLayout(self)
        self._base = config
        self._period: int | None = None  # the JACK server's, where the chosen output is a JACK device
        devices = audio_devices()
        self.input = self._combo("input_device", [DEFAULT_DEVICE, *devices["input"]], config.input_device)
        self.output = self._combo("output_device", [DEFAULT_DEVICE, *devices["output"]], config.output_device)
        self.samplerate = self._combo("samplerate", [], str(config.samplerate))
        self._offer_rates()
        for c in (self.input, self.output):
            c.currentTextChanged.connect(self._offer_rates)
        self.blocksize = self._combo("blocksize", [str(b) for b in BLOCKSIZES], str(config.blocksize))
        self.prefill = self._combo("prefill_blocks", [str(n) for n in PREFILL_CHOICES], str(config.prefill_blocks))
        self.prefill.setToolTip("Blocks of output the processing thread keeps ready. More survives longer "
                                "hiccups of the machine (fewer dropouts); each adds one block of latency.")
        self.prefill_ms = QLabel()
        self.prefill_ms.setObjectName("prefill_ms")
        for c in (self.prefill, self.samplerate, self.blocksize, self.input, self.output):
            c.currentTextChanged.connect(self._show_prefill_ms)  # (the devices': after _offer_rates read the period)
        self._show_prefill_ms()
        ports, err = input_ports()
        self.midi = self._combo("midi_port", [NONE, VIRTUAL, *ports], midi_port)
        form.addRow("Audio input", self.input)
        form.addRow("Audio output", self.output)
        form.addRow("Sample rate (Hz)", self.samplerate)
        form.addRow("Block size (frames)", self.blocksize)
        form.addRow("Safety buffer (blocks)", self.prefill)
        form.addRow("", self.prefill_ms)
        form.addRow("MIDI input", self.midi)
        if err:
            form.addRow(QLabel(f"MIDI unavailable: {err}"))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _combo(self, name: str, items: list[str], current) -> QComboBox:
        c = QComboBox()
        c.setObjectName(name)
        c.addItems(items)
        cur = DEFAULT_DEVICE if current in (None, "") else str(current)
        if c.findText(cur) < 0:
            c.addItem(cur)  # remembered but absent now (unplugged): keep it visible
        c.setCurrentText(cur)
        return c

    def _offer_rates(self) -> None:
        """The rates the chosen devices run; the rate chosen stays while they run it (else the first
        they do)."""
        rate = self.samplerate.currentText()
        with _portaudio_open():  # one PortAudio start for both (each opens a JACK client)
            rates = [str(r) for r in device_rates(self._device(self.input), self._device(self.output), self._base)]
            self._period = jack_period(self._device(self.output), self._base)
        self.samplerate.blockSignals(True)  # one change signal at the end, if the rate changed
        self.samplerate.clear()
        self.samplerate.addItems(rates)
        self.samplerate.setCurrentText(rate if rate in rates else rates[0])
        self.samplerate.blockSignals(False)
        if self.samplerate.currentText() != rate:
            self.samplerate.currentTextChanged.emit(self.samplerate.currentText())

    @staticmethod
    def _device(combo: QComboBox):
        return None if combo.currentText() == DEFAULT_DEVICE else device_arg(combo.currentText())

    def _show_prefill_ms(self) -> None:
        """The latency the pre-fill adds, as the engine will run it: on a JACK server whose period is
        longer than the block, raised to cover its bursts (``prefill_at_start``)."""
        c = self.engine_config()
        blocks = prefill_at_start(c, self._period)
        ms = 1e3 * blocks * c.blocksize / c.samplerate
        raised = (f" ({blocks} blocks: the JACK server's {self._period}-frame period needs them)"
                  if blocks != c.prefill_blocks else "")
        self.prefill_ms.setText(f"adds {ms:.1f} ms of output latency{raised}")

    def engine_config(self) -> EngineConfig:
        # the rest as the engine runs now: a config equal to it means "audio unchanged"
        return replace(self._base, samplerate=int(self.samplerate.currentText()),
                       blocksize=int(self.blocksize.currentText()), input_device=self._device(self.input),
                       output_device=self._device(self.output), prefill_blocks=int(self.prefill.currentText()))

    def midi_port(self) -> str:
        return self.midi.currentText()
