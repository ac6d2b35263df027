"""Audio devices (PortAudio) and MIDI ports (mido), listed for people."""
from __future__ import annotations

from realtime.io.native_stderr import capture_stderr


def midi_ports() -> tuple[list[str], list[str], str | None]:
    """(inputs, outputs, error) — error explains why MIDI is unavailable."""
    try:
        import mido

        return mido.get_input_names(), mido.get_output_names(), None
    except Exception as e:  # rtmidi raises its own types for a missing ALSA/JACK backend
        if "JACK server not running" in str(e):  # rtmidi's words for it, as the audio listing says it
            return [], [], "no JACK server running"
        return [], [], f"{type(e).__name__}: {e}"


def has_audio_device(mode: str = "duplex", named: bool = False) -> bool:
    """Whether a stream of ``mode`` ("duplex", "input", "output") has a device to open: a default
    one for each direction it uses (an output-only card has no default input), or one the user
    ``named`` (opened as asked; a wrong name is the engine's one-line error, not the demo)."""
    from realtime.io.portaudio import sd

    if named:
        return True
    s = sd()
    try:
        default_in, default_out = s.default.device
        return ((mode == "output" or default_in >= 0) and (mode == "input" or default_out >= 0)
                and len(s.query_devices()) > 0)
    except s.PortAudioError:
        return False


def describe_devices() -> str:
    from realtime.io.portaudio import list_devices

    lines = ["Audio devices:"]
    with capture_stderr():  # libjack's "cannot connect" lines: the listing says that itself
        devs = list_devices()
        ins, outs, err = midi_ports()
    if not devs:
        lines.append("  (none: no sound card and no JACK server running)")
    for d in devs:
        lines.append(f"  {d['index']:2d}  {d['name']}  [{d['hostapi']}]  in {d['inputs']} / out {d['outputs']}"
                     f"  {d['default_samplerate']:.0f} Hz")
    lines.append("MIDI inputs:" if not err else f"MIDI: unavailable ({err})")
    lines += [f"  {n}" for n in ins]
    if not err:
        lines.append("MIDI outputs:")
        lines += [f"  {n}" for n in outs]
    return "\n".join(lines)
