"""DDSP instrument synth: MIDI in, trained timbres, up to 32 voices (processor kind "synth").

Per block: one Numba kernel applies the queued MIDI events at their sample offsets and computes
each voice's decoder inputs at the 250 Hz frame boundaries in the block; one ONNX Runtime call
(all sounding voices as a batch, explicit GRU state, preallocated I/O bindings) turns them into
harmonic and noise controls; one Numba kernel synthesizes. A note-on or release start between two
frame boundaries adds an event step (voices.py): one more one-frame call for the voices that have
one, and the frames' call split where a voice's state changes inside the block; so notes start
and release at their events' samples, for any block size. A program change that picks an
instrument cuts the block there (``_part_cut``): the part before it plays on the old
decoder, the part from it on the new one, so the switch falls on its sample, for any block size
(taken at the block's start, a flute note ended as trumpet up to a block early: 0.2 s at -b 16384).
All Sound Off (CC120) cuts the block too: the notes of the part before it sound up to it.
The synth adds its sound to the block (silence in an output-only engine), so it can also layer
over an input.

MIDI reaches ``handle_midi(status, data1, data2, offset)`` between blocks (the engine's DSP
thread via Chain.handle_midi, or the offline renderer with exact offsets).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from numba import njit

from realtime.dsp.blocking import check_block, pow2_at_least
from realtime.dsp.processor import MidiQueue, Param, Processor, Readout
from realtime.dsp.processors import register
from realtime.dsp.processors.neural.onnx import StatefulSession, bind_output, first_line
from realtime.dsp.processors.neural.weights import env_path, model_dir
from realtime.dsp.processors.synth import kernels as sk
from realtime.dsp.processors.synth import voices as sv
from realtime.errors import ModelError

# the committed decoders; DDSP_MODEL_DIR points at another folder of <instrument>.onnx files
MODEL_DIR = env_path(os.environ["DDSP_MODEL_DIR"]) if os.environ.get("DDSP_MODEL_DIR") else model_dir("ddsp")
INSTRUMENTS = ("violin", "flute", "trumpet")
# frames of a block the decoders take in one part at most: a longer block is played in parts (as at
# a program change), so -b 65536 binds call shapes for 22 frames, not 342 (700 MB per synth)
MAX_PART = 4096
INPUTS = ("f0_hz", "loudness_db", "state")
OUTPUTS = ("harmonics", "noise", "state_out")


@njit(nogil=True, cache=True)
def _count_voices(vs, readings):
    """readings = [voices held (key down), voices sounding (held or releasing)]."""
    held = 0
    sounding = 0
    for v in range(vs.shape[0]):
        st = vs[v, sv.V_STAGE]
        if st == sv.ON:
            held += 1
        if st != sv.FREE:
            sounding += 1
    readings[0] = held
    readings[1] = sounding


# after a switch of decoder, a voice whose envelope is above this goes on from the new decoder's
# sounding state, a quieter one (a deep release tail, the start of an attack) from its silence state
SEED_SOUNDING_ABOVE_DB = -30.0


@njit(nogil=True, cache=True)
def _seed_sounding(vs, g, t, state, sounding):
    """After a switch of decoder (its state reset to silence): each voice that sounds at time t
    goes on from ``sounding`` (a state of the new decoder playing a note), so its level does not
    drop while the new GRU state builds up. A release tail far down stays on the silence state:
    a loud state under a quiet input made it bump up by 15 dB."""
    atk = max(1.0, g[sv.G_ATK])
    rel = max(1.0, g[sv.G_REL])
    for v in range(vs.shape[0]):
        if vs[v, sv.V_STAGE] != sv.FREE and sv._env_db(vs, v, t, atk, rel) > SEED_SOUNDING_ABOVE_DB:
            for h in range(sounding.shape[0]):
                state[0, v, h] = sounding[h]


def sounding_state(inst) -> np.ndarray:
    """The state a sounding note carries into a decoder switched to: one second of a held middle C
    at velocity 100 from the silence state, [hidden] float32. ``inst``: a prepared ``Instrument``
    (or anything with its session, frame rate, loudness map and silence state)."""
    f0 = np.full((1, int(inst.frame_rate)), 440.0 * 2.0 ** ((60 - 69) / 12.0), np.float32)
    ld = np.full_like(f0, inst.lmap[0] + inst.lmap[1] * 40.0 * math.log10(100.0 / 127.0))
    _, _, st = inst.session.session.run(None, {"f0_hz": f0, "loudness_db": ld,
                                               "state": np.ascontiguousarray(inst.silence[None, None, :])})
    return np.ascontiguousarray(st[0, 0], np.float32)


@njit(nogil=True, cache=True)
def _block_program(ev, n_ev, pc_chan, ch10_notes, mapped) -> int:
    """The last program change among a block's queued MIDI events on the program channel whose
    program a loaded instrument has (``mapped[program]``), or -1.

    The synth plays one instrument, so one channel chooses it: the first to send a program
    change since the last reset (``pc_chan[0]``, -1: none yet). A multi-track file's later change
    on another track switched the whole synth and cut the first track's held notes. A program no
    instrument has is ignored wherever it falls: taking the block's last change whatever it was
    made the instrument depend on the block size (violin, then unmapped 0 one tick later, stayed
    violin when the two fell in different blocks and fell back to the default when they shared one)."""
    prog = -1
    for k in range(n_ev):
        status = int(ev[k, 1])
        if status & 0xF0 == 0xC0 and (ch10_notes or status & 0x0F != sv.DRUM_CHANNEL):  # a drum kit is no
            # instrument here, unless channel 10 is played as an ordinary channel
            if pc_chan[0] < 0:
                pc_chan[0] = status & 0x0F
            p = min(127, max(0, int(ev[k, 2])))
            if status & 0x0F == pc_chan[0] and mapped[p]:
                prog = p
    return prog


@njit(nogil=True, cache=True)
def _part_cut(ev, n_ev, n, ch10_notes, mapped) -> int:
    """Where the first part of a block of n frames ends: at the earliest program change after its
    start that ``_block_program`` could take (a loaded instrument's program, not on the drum
    channel), or all sound off (CC120), at its offset as ``sv.controls`` reads it; n when there is
    none. CC120 stops its channel's voices and drops their steps in the part (``sv.controls``):
    uncut, a note begun earlier in the same block never sounded, so a render depended on the block
    size (at -b 1024 a note 400 samples before a CC120 was silent, at -b 64 it played)."""
    cut = n
    for k in range(n_ev):
        st, d1 = ev[k, 1], ev[k, 2]
        if not (st == st and d1 == d1):
            continue
        status = int(st)
        off = sv.event_offset(ev[k, 0], n)
        if status & 0xF0 == 0xC0 and (ch10_notes or status & 0x0F != sv.DRUM_CHANNEL):
            if mapped[min(127, max(0, int(d1)))] and 0.0 < off < cut:
                cut = int(off)
        elif 0xB0 <= status <= 0xBF and int(d1) == 120 and 0.0 < off < cut:
            cut = int(off)
    return cut


@njit(nogil=True, cache=True)
def _hold_from(ev, n_ev, n, cut, rest) -> int:
    """Move the queued events at or after frame ``cut`` of a block of n frames (their offsets as
    ``sv.controls`` reads them) to ``rest``, in order, at their offsets from ``cut``; the others
    close up at the front of ``ev``, in order. Returns how many moved."""
    m = 0
    j = 0
    for k in range(n_ev):
        off = sv.event_offset(ev[k, 0], n)
        if off >= cut:
            rest[m, 0] = off - cut
            rest[m, 1:] = ev[k, 1:]
            m += 1
        else:  # j <= k: the row moves up, or stays
            ev[j, 1:] = ev[k, 1:]
            ev[j, 0] = off
            j += 1
    return m


@njit(nogil=True, cache=True)
def steps_in(es, i0, i1, state, silence, f0, ld, st, o) -> int:
    """Event steps i0..i1 of ``es`` (one ES_J): the inputs and starting state of those that decode,
    into rows o... of f0 / ld (rows, 1) and st (1, rows, hidden). Returns how many."""
    m = o
    for r in range(i0, i1):
        kind = es[r, sv.ES_KIND]
        if kind == sv.ES_RESET:
            continue
        v = int(es[r, sv.ES_V])
        f0[m, 0] = es[r, sv.ES_F0]
        ld[m, 0] = es[r, sv.ES_LD]
        for h in range(st.shape[2]):
            st[0, m, h] = silence[h] if kind == sv.ES_FRESH else state[0, v, h]
        m += 1
    return m - o


@njit(nogil=True, cache=True)
def steps_out(es, i0, i1, state, silence, h, nz, st, o, es_harm, es_noise) -> None:
    """After the call of ``steps_in``: each step's controls into its row of es_harm / es_noise, and
    each voice's state where it goes on from (its last row's)."""
    m = o
    for r in range(i0, i1):
        v = int(es[r, sv.ES_V])
        last = es[r, sv.ES_LAST] == 1.0
        if es[r, sv.ES_KIND] == sv.ES_RESET:
            if last:
                for k in range(silence.shape[0]):
                    state[0, v, k] = silence[k]
            continue
        for k in range(es_harm.shape[1]):
            es_harm[r, k] = h[m, 0, k]
        for k in range(es_noise.shape[1]):
            es_noise[r, k] = nz[m, 0, k]
        if last:
            for k in range(st.shape[2]):
                state[0, v, k] = st[0, m, k]
        m += 1


class StepCalls:
    """One-frame decoder calls for event steps: inputs, starting states and outputs of up to
    ``rows`` steps in buffers of their own, bound per row count (the voices' state, the session's
    ping-pong buffers, is not touched: ``steps_in`` / ``steps_out`` copy from and to it).

    Parameters
    ----------
    ses : StatefulSession
        The decoder's (its session and run options).
    hidden, n_harm, n_noise, rows : int
        Its state size and control sizes; the most steps one call takes.
    """

    def __init__(self, ses: StatefulSession, hidden: int, n_harm: int, n_noise: int, rows: int):
        self.session = ses.session
        self.f0 = np.full((rows, 1), 440.0, np.float32)
        self.ld = np.full((rows, 1), sv.FLOOR_DB, np.float32)
        self.st_in = np.zeros((1, rows, hidden), np.float32)
        self.st_out = np.zeros((1, rows, hidden), np.float32)
        self.h = np.zeros((rows, 1, n_harm), np.float32)
        self.nz = np.zeros((rows, 1, n_noise), np.float32)
        self._io: dict[int, object] = {}
        self._ro = ses.run_options

    def bind(self, m: int) -> None:
        """Bind the call shape of m steps (1 <= m <= rows)."""
        io = self.session.io_binding()
        io.bind_cpu_input("f0_hz", self.f0[:m])
        io.bind_cpu_input("loudness_db", self.ld[:m])
        io.bind_cpu_input("state", self.st_in[:, :m])
        bind_output(io, "harmonics", self.h[:m])
        bind_output(io, "noise", self.nz[:m])
        bind_output(io, "state_out", self.st_out[:, :m])
        self._io[m] = io

    def warm_kernels(self, state, silence, es_harm, es_noise) -> None:
        """Compile (or load) ``steps_in`` / ``steps_out`` now, not at the first note on the DSP thread."""
        es = np.zeros((1, sv.NES), np.float64)
        steps_in(es, 0, 0, state, silence, self.f0, self.ld, self.st_in, 0)
        steps_out(es, 0, 0, state, silence, self.h, self.nz, self.st_out, 0, es_harm, es_noise)

    def run(self, m: int) -> None:
        """Decode the first m steps (binding the shape first if it is new: batch renders only)."""
        if m not in self._io:
            self.bind(m)
        self.session.run_with_iobinding(self._io[m], self._ro)


class Instrument:
    """One trained decoder: its StatefulSession, metadata, and per-shape buffers.

    Parameters
    ----------
    name : str
        The instrument (``violin``...), for messages.
    path : Path
        Its ``.onnx`` decoder.
    provider : str
        ONNX Runtime provider request (auto/cpu/cuda/tensorrt).

    Raises
    ------
    ModelError
        The model is missing, corrupt, or lacks the synth's inputs, outputs or metadata.
    """

    def __init__(self, name: str, path: Path, provider: str):
        self.name = name
        self.path = path
        self.session = StatefulSession(path, f"DDSP {name}", inputs=INPUTS, outputs=OUTPUTS, provider=provider,
                                threads=1, train_hint=f"python main.py train ddsp --instrument {name}")
        meta = self.session.metadata
        try:
            self.frame_rate = float(meta["frame_rate"])
            self.hidden = int(meta["hidden"])
            lm = json.loads(meta["loudness_map"])
            self.lmap = np.array([lm["c0"], lm["c1"], lm["c2"]], np.float64)
            self.program = int(meta.get("gm_program", -1))
        except (KeyError, ValueError, TypeError) as e:
            raise self.session.error(f"lacks synth metadata ({e}): re-export it") from None
        if not (math.isfinite(self.frame_rate) and 1.0 <= self.frame_rate <= 1000.0):
            raise self.session.error(f"has frame_rate {meta['frame_rate']!r} in its metadata (expected 1-1000 "
                                     "frames per second): re-export it")
        declared = self.session.input_shape("state")[-1]
        if isinstance(declared, int) and declared != self.hidden:
            raise self.session.error(f"says hidden={self.hidden} in its metadata but its state input holds "
                                     f"{declared}: re-export it")
        self.n_harm, self.n_noise = (self.session.output_shape(o)[-1] for o in ("harmonics", "noise"))
        if not (isinstance(self.n_harm, int) and isinstance(self.n_noise, int)):
            raise self.session.error(f"declares its control sizes as {self.n_harm}/{self.n_noise}; this runtime "
                                     "needs them fixed: re-export it")
        if self.n_noise != 65 or self.n_harm < 1:
            raise self.session.error(f"has unexpected control sizes {self.n_harm}/{self.n_noise}")

    @property
    def state(self) -> np.ndarray:
        """The GRU state [1, voices, hidden] the next decoder call reads (the voice kernel seeds
        new voices in it)."""
        return self.session.state["state"]

    def prepare(self, t_max: int, hop: int) -> None:
        """Buffers and bindings for every (frames <= t_max, sounding voices) call shape."""
        V, H = sv.MAX_VOICES, self.hidden
        self.f0 = [np.zeros((V, t), np.float32) for t in range(t_max + 1)]
        self.ld = [np.full((V, t), sv.FLOOR_DB, np.float32) for t in range(t_max + 1)]
        self.harm = [np.zeros((V, t, self.n_harm), np.float32) for t in range(t_max + 1)]
        self.noise = [np.zeros((V, t, self.n_noise), np.float32) for t in range(t_max + 1)]
        self.session.allocate_state({"state": (1, V, H)})
        for t in range(1, t_max + 1):
            for n in range(1, V + 1):
                self.session.bind((t, n), {"f0_hz": self.f0[t][:n], "loudness_db": self.ld[t][:n]},
                                  {"harmonics": self.harm[t][:n], "noise": self.noise[t][:n]},
                                  state_view=lambda a, n=n: a[:, :n])
        self.session.warm_up([(1, 1), (t_max, V)])
        self.silence = self.silence_state()
        self.steps = StepCalls(self.session, H, self.n_harm, self.n_noise, sv.ES_MAX)
        for m in range(1, sv.ES_MAX + 1):
            self.steps.bind(m)
        try:
            self.steps.run(1)
        except Exception as e:  # noqa: BLE001 - onnxruntime's words: the single-step shape does not run
            raise self.session.error(f"does not run: {first_line(e)}") from None
        self.steps.run(sv.ES_MAX)
        self.es_harm = np.zeros((sv.ES_ROWS, self.n_harm), np.float32)
        self.es_noise = np.zeros((sv.ES_ROWS, self.n_noise), np.float32)
        self.steps.warm_kernels(self.state, self.silence, self.es_harm, self.es_noise)

    def silence_state(self) -> np.ndarray:
        """The state a voice starts from: one second of silence from zero, [hidden] float32."""
        f0 = np.full((1, int(self.frame_rate)), 440.0, np.float32)
        ld = np.full_like(f0, sv.FLOOR_DB)
        _, _, st = self.session.session.run(None, {"f0_hz": f0, "loudness_db": ld,
                                                   "state": np.zeros((1, 1, self.hidden), np.float32)})
        return np.ascontiguousarray(st[0, 0], np.float32)

    def reset(self) -> None:
        """Every voice's state back to the silence state."""
        self.session.reset_state({"state": self.silence})

    def run(self, t: int, n: int) -> None:
        """Decode t frames of the first n voices (one batched call)."""
        self.session.run((t, n))

    def decode(self, T: int, used: int, es: np.ndarray, n_es: int) -> None:
        """A block's decoding: its T frames for the first ``used`` voices and its ``n_es`` event
        steps, each step where its voice's state changes (``es[:, ES_J]``): the frames' call is
        split there."""
        if n_es == 0:
            if T and used:
                self.run(T, used)
            return
        a = i = 0
        while i < n_es:
            j = int(es[i, sv.ES_J])
            k = i
            while k < n_es and es[k, sv.ES_J] == j:
                k += 1
            if j > a:
                self.frames(T, a, j, used)
                a = j
            st = self.state
            m = steps_in(es, i, k, st, self.silence, self.steps.f0, self.steps.ld, self.steps.st_in, 0)
            if m:
                self.steps.run(m)
            steps_out(es, i, k, st, self.silence, self.steps.h, self.steps.nz, self.steps.st_out, 0, self.es_harm,
                      self.es_noise)
            i = k
        if a < T:
            self.frames(T, a, T, used)

    def frames(self, T: int, a: int, b: int, used: int) -> None:
        """Decode frames a..b of the block's T (one call; copied through the (b - a)-frame buffers)."""
        if not used:
            return
        if a == 0 and b == T:
            self.run(T, used)
            return
        t = b - a
        self.f0[t][:used] = self.f0[T][:used, a:b]
        self.ld[t][:used] = self.ld[T][:used, a:b]
        self.run(t, used)
        self.harm[T][:used, a:b] = self.harm[t][:used]
        self.noise[T][:used, a:b] = self.noise[t][:used]


_UNREADABLE_SAID: set[str] = set()  # the optional decoders that could not be loaded, said once per process


def _left_out(name: str, path, e: ModelError) -> None:
    """Say once on stderr that the ``name`` decoder at ``path`` is left out (unreadable, or it does not run)."""
    if str(path) not in _UNREADABLE_SAID:
        _UNREADABLE_SAID.add(str(path))
        import sys

        print(f"warning: {str(e).rstrip('.')}; a program change to the {name} is ignored", file=sys.stderr)


@register
class Synth(MidiQueue, Processor):
    """The DDSP instrument (signal path: the module docstring).

    Parameters
    ----------
    model_dir : str or Path, optional
        Folder of ``<instrument>.onnx`` decoders (default: the committed ones, or
        ``$DDSP_MODEL_DIR``).
    provider : str
        ONNX Runtime provider request for every decoder (auto/cpu/cuda/tensorrt).
    **values
        Initial parameter values by id.

    Raises
    ------
    ModelError
        From ``prepare``: the selected instrument's decoder is missing or broken. Another one that
        is unreadable, does not run, or has another frame rate is left out, said once on stderr.

    Attributes
    ----------
    instruments : dict of int to Instrument
        The loaded decoders by instrument index (set by ``prepare``).
    dropped_events : int
        MIDI messages dropped because a block's queue was full.
    """

    kind = "synth"
    params = (
        Param("instrument", "Instrument", 0, len(INSTRUMENTS) - 1, 0, choices=INSTRUMENTS, step=1, smoothing_ms=0),
        Param("gain_db", "Gain", -40.0, 12.0, 0.0, "dB"),
        Param("attack_ms", "Attack", 1.0, 2000.0, 10.0, "ms", scale="log", smoothing_ms=0),
        Param("release_ms", "Release", 10.0, 5000.0, 300.0, "ms", scale="log", smoothing_ms=0),
        Param("vibrato_rate_hz", "Vibrato rate", 1.0, 12.0, 5.5, "Hz", smoothing_ms=0),
        Param("vibrato_depth_cents", "Vibrato depth", 0.0, 100.0, 30.0, "cents", smoothing_ms=0),
        Param("balance", "Noise/harmonic", -1.0, 1.0, 0.0, smoothing_ms=0),
        Param("brightness", "Brightness", -1.0, 1.0, 0.0, smoothing_ms=0),
        Param("reverb_mix", "Reverb mix", 0.0, 1.0, 0.0),
        Param("polyphony", "Voices", 1, sv.MAX_VOICES, 16, step=1, smoothing_ms=0),
        Param("bend_range", "Bend range", 0, 24, 2, "st", step=1, smoothing_ms=0),
        Param("mode", "Mode", 0, 1, 0, choices=("poly", "mono"), step=1, smoothing_ms=0),
        Param("portamento_ms", "Portamento", 0.0, 2000.0, 0.0, "ms", smoothing_ms=0),
        # GM channel 10 is percussion, which this instrument does not play; a pad or keyboard set
        # to send on channel 10 live wants it played as any other channel
        Param("channel10", "Channel 10", 0, 1, 0, choices=("GM drums: ignored", "played as notes"), step=1,
              smoothing_ms=0),
    )
    # "playing": the instrument actually sounding. A program change from the keyboard, or a choice
    # whose model is not there, changes it in the engine: the panel follows this readout
    readouts = (Readout("held", "Held notes", "", 0.0, sv.MAX_VOICES),
                Readout("voices", "Voices", "", 0.0, sv.MAX_VOICES),
                Readout("playing", "Playing", kind="text", min=0.0, max=len(INSTRUMENTS) - 1, choices=INSTRUMENTS))
    assert [p.id for p in params][sv.K_PORTA] == "portamento_ms" and [p.id for p in params][sv.K_INSTR] == "instrument"
    assert [p.id for p in params][sv.K_CH10] == "channel10"

    def __init__(self, model_dir=None, provider: str = "auto", **values):
        super().__init__(**values)
        self.model_dir = Path(model_dir) if model_dir else MODEL_DIR
        self.provider = provider
        self.instruments: dict[int, Instrument] = {}
        self._ev = np.zeros((sv.MAX_EVENTS, 4), np.float64)
        self._n_ev = 0
        self._es = np.zeros((sv.ES_ROWS, sv.NES), np.float64)  # the block's event steps (g[G_NES] of them)
        self._rest = np.zeros((sv.MAX_EVENTS, 4), np.float64)  # the events of a block's later parts
        self._n_rest = 0
        self.dropped_events = 0

    # ------------------------------------------------------------------ life cycle
    def _load_instruments(self) -> dict:
        """The decoders by instrument index: the selected one must load; the others when present and
        readable. One that is not (a corrupt violin.onnx) is left out as a missing one is, said once
        on stderr: it refused a song played on the flute, which never needed it."""
        sel = int(self.values[sv.K_INSTR])
        out = {}
        for i, name in enumerate(INSTRUMENTS):
            path = self.model_dir / f"{name}.onnx"
            if i == sel:
                out[i] = Instrument(name, path, self.provider)
            elif path.exists():
                try:
                    out[i] = Instrument(name, path, self.provider)
                except ModelError as e:
                    _left_out(name, path, e)
        return out

    def _prepare(self) -> None:
        self.instruments = self._load_instruments()
        sel = int(self.values[sv.K_INSTR])
        rate = self.instruments[sel].frame_rate  # the played decoder's grid is the synth's
        for i, inst in list(self.instruments.items()):  # an optional decoder on another grid is left out
            if inst.frame_rate != rate:
                _left_out(inst.name, inst.path, inst.session.error(
                    f"has frame_rate {inst.frame_rate:g} in its metadata, the {INSTRUMENTS[sel]}'s {rate:g}"))
                del self.instruments[i]
        sr = self.sample_rate
        self.hop = max(1, int(round(sr / rate)))
        self.t_max = (min(self.max_block, MAX_PART) - 1) // self.hop + 1  # frames of one part at most
        for i, inst in list(self.instruments.items()):
            try:
                inst.prepare(self.t_max, self.hop)
            except ModelError as e:  # (one that loads but does not run) as an unreadable one: left out
                if i == sel:
                    raise
                _left_out(inst.name, inst.path, e)
                del self.instruments[i]
        self._sounding = {i: sounding_state(inst) for i, inst in self.instruments.items()}
        K = max(inst.n_harm for inst in self.instruments.values())
        V = sv.MAX_VOICES
        self.vs, self.g, self.stack = sv.new_state()
        for i, inst in self.instruments.items():  # compiled here, not at the first program change (no voice sounds)
            _seed_sounding(self.vs, self.g, 0.0, inst.state, self._sounding[i])
        self._order = np.zeros(sv.MAX_EVENTS, np.int64)
        self._pc_chan = np.full(1, -1, np.int64)  # the channel whose program changes choose the instrument
        self._mapped = np.zeros(128, np.bool_)  # the GM programs a loaded instrument has
        for inst in self.instruments.values():
            if 0 <= inst.program <= 127:
                self._mapped[inst.program] = True
        self._act = np.zeros((self.t_max, V), np.float64)  # each voice's gain per frame (0: silent)
        self._lag = np.zeros((self.t_max, V), np.float64)  # each voice's grid after the decoder's, per frame
        self._phase = np.zeros(V, np.float64)
        self._a_from = np.zeros((V, K), np.float64)
        self._a_to = np.zeros((V, K), np.float64)
        self._f_from = np.zeros(V, np.float64)
        self._f_to = np.zeros(V, np.float64)
        self._live = np.zeros(V, np.float64)
        self._vr = np.zeros((V, sk.NVR), np.float64)  # each voice's ramp start and pending frame (sk.VR_*)
        self._p_a = np.zeros((V, K), np.float64)  # its pending frame's harmonics
        self._nz_cur = np.zeros((V, 65), np.float64)  # noise magnitudes of its ramp target, of its pending frame
        self._nz_pend = np.zeros((V, 65), np.float64)
        self._kscale = np.zeros(65, np.float64)
        taps = sk.noise_taps(sr)
        self._table = sk.noise_table(65, sk.TRAIN_SR / sk.TRAIN_TAPS, taps, sr)
        self._ir = np.zeros(taps, np.float64)
        self._xbuf = np.zeros(self.hop, np.float64)
        self._conv = np.zeros(self.hop + taps, np.float64)
        self._rng = np.zeros(1, np.uint64)
        need = 2 * self.hop + taps + self.max_block
        self._ring = np.zeros(pow2_at_least(need), np.float64)
        self._noise_scale = float(np.sqrt(sr / sk.TRAIN_SR))
        self._mono = np.zeros(self.max_block, np.float64)
        self._sn = np.zeros(self.max_block, np.float64)
        self._c2 = np.zeros(self.max_block, np.float64)
        self._sp = np.zeros(self.max_block, np.float64)
        self._w = np.zeros(self.max_block, np.float64)
        self._smooth = np.zeros(3, np.float64)
        self._smooth[2] = self.params[sv.K_GAIN].smoothing_coeff(sr)
        lens = [max(1, int(round(d * sr / 48000))) for d in sk.REVERB_DELAYS_48K]
        self._rev_len = np.array(lens, np.int64)
        self._rev_buf = np.zeros((4, max(lens) + 1), np.float64)
        self._rev_pos = np.zeros(1, np.int64)
        self._sounded = np.zeros(len(INSTRUMENTS), np.bool_)  # which instruments played a note since reset

    def reset(self) -> None:
        if not self.instruments:
            return
        sv.reset_state(self.vs, self.g, self.stack)
        for inst in self.instruments.values():
            inst.reset()
        for a in (self._phase, self._a_from, self._a_to, self._f_from, self._f_to, self._live, self._ring,
                  self._rev_buf, self._act, self._lag, self._vr, self._p_a, self._nz_cur, self._nz_pend):
            a.fill(0.0)
        self._vr[:, sk.VR_PT] = -1.0
        self._rng[0] = np.uint64(0x9E3779B97F4A7C15)
        self._rev_pos[0] = 0
        self._pos = 0
        self._n_ev = 0
        self._n_rest = 0
        self._pc_chan[0] = -1
        self._sounded[:] = False
        self._cur = int(self.values[sv.K_INSTR])
        self._smooth[0] = 10.0 ** (self.values[sv.K_GAIN] / 20.0)
        self._smooth[1] = self.values[sv.K_REVERB]

    # ------------------------------------------------------------------ MIDI (between blocks)
    def panic(self) -> None:
        """All sound off (every channel) at the start of the next block."""
        for ch in range(16):
            self.handle_midi(0xB0 | ch, 120, 0, 0)

    # ------------------------------------------------------------------ audio
    def _switch_instrument(self, want: int) -> None:
        if want not in self.instruments:  # not loaded (model file absent): stay on the current one
            self.values[sv.K_INSTR] = self._cur
            return
        self._cur = want
        # one decoder plays every voice, so the notes that sound (held, pedalled, releasing) go on in
        # the new timbre, as a GM player's held notes outlive a program change (freeing them cut
        # every held note to silence until its note-off). Each goes on from a state of the new
        # decoder playing a note: from its silence state the level dropped ~30 dB for 10 ms while
        # the GRU state built up. The oscillators keep their phase and ramp over one frame from the
        # old decoder's amplitudes, so there is no click; new notes start from silence as ever
        inst = self.instruments[want]
        inst.reset()
        _seed_sounding(self.vs, self.g, float(self._pos), inst.state, self._sounding[want])

    def process(self, block: np.ndarray) -> None:
        n = block.shape[0]
        check_block(n, self.max_block)
        a = 0
        while True:  # in parts, cut at the program changes (the module docstring)
            m = self.part(n - a)
            inst, T, used = self.controls(m)
            inst.decode(T, used, self._es, self.n_steps)
            self.synthesize(block if m == n else block[a:a + m], inst, T, used)
            a += m
            if a >= n:
                return
            self.next_part()

    def part_cut(self, n: int) -> int:
        """Frames of a block of n before its first program change or all sound off after its start,
        at most MAX_PART (n: none, in a block of at most MAX_PART)."""
        return min(MAX_PART, _part_cut(self._ev, self._n_ev, n, self.values[sv.K_CH10] >= 0.5, self._mapped))

    def part(self, n: int, cut: int | None = None) -> int:
        """Make the queued events those of the block's first ``cut`` frames (default:
        ``part_cut``); the later ones wait for ``next_part``. Returns ``cut``."""
        cut = self.part_cut(n) if cut is None else cut
        if cut < n:
            self._n_rest = _hold_from(self._ev, self._n_ev, n, cut, self._rest)
            self._n_ev -= self._n_rest
        return cut

    def next_part(self) -> None:
        """After a part's ``controls``: the events that waited are the next part's."""
        m = self._n_rest
        self._ev[:m] = self._rest[:m]
        self._n_ev = m
        self._n_rest = 0

    def controls(self, n: int) -> tuple[Instrument, int, int]:
        """A block's first half: its MIDI applied, the decoder inputs of its frames written.

        Returns
        -------
        (Instrument, int, int)
            The instrument playing, the block's frames T and the leading voices the decoder must
            run for them (then ``inst.decode(T, used, self._es, self.n_steps)``, which also
            decodes the block's event steps, then ``synthesize``).

        Raises
        ------
        ValueError
            ``n`` is more than the ``max_block`` the synth was prepared for.
        """
        check_block(n, self.max_block)  # the kernels write max_block-sized buffers unchecked
        # a program change picks a loaded instrument with that GM program before the block's notes
        # start: switching after them (at the next block) cut a note that came with the change,
        # which is how most General MIDI files begin. ``process`` cut the block at it, so the block
        # starts there
        prog = _block_program(self._ev, self._n_ev, self._pc_chan, self.values[sv.K_CH10] >= 0.5, self._mapped)
        if prog >= 0:
            for i, ins in self.instruments.items():
                if ins.program == prog:
                    self.values[sv.K_INSTR] = i
        want = int(self.values[sv.K_INSTR])
        if want != self._cur:
            self._switch_instrument(want)
        inst = self.instruments[self._cur]
        T = sv.frame_count(self._pos, n, self.hop)
        state = inst.state
        used = sv.controls(self._ev, self._n_ev, self._order, n, self._pos, self.hop, self.sample_rate,
                           self.values, self.g, self.vs, self.stack, inst.lmap, inst.f0[T], inst.ld[T],
                           self._act, self._lag, state, inst.silence, self._es)
        self._n_ev = 0
        if used:
            self._sounded[self._cur] = True
        return inst, T, used

    def instruments_sounded(self) -> list[str]:
        """The instruments that played since the last reset (a program change picks another)."""
        return [INSTRUMENTS[i] for i in np.flatnonzero(self._sounded)]

    def synthesize(self, block: np.ndarray, inst: Instrument, T: int, used: int) -> None:
        """A block's second half: the decoded frames synthesized and added to ``block``."""
        n = block.shape[0]
        sk.render(block, n, self._pos, self.hop, self.sample_rate, T, inst.harm[T], inst.noise[T], self._act,
                  self._lag, inst.f0[T], used if T else 0, self.values, self._phase, self._a_from,
                  self._a_to, self._f_from, self._f_to, self._live, self._vr, self._p_a, self._nz_cur, self._nz_pend,
                  self._es, self.n_steps, inst.es_harm, inst.es_noise, self._kscale, self._table, self._ir, self._xbuf,
                  self._conv, self._rng, self._ring, self._noise_scale, self._mono, self._sn, self._c2, self._sp,
                  self._w, self._smooth, self._rev_buf, self._rev_pos, self._rev_len)
        self._pos += n
        _count_voices(self.vs, self.readings)
        self.readings[2] = self._cur

    @property
    def n_steps(self) -> int:
        """How many event steps (rows of ``_es``) the last block's ``controls`` made."""
        return int(self.g[sv.G_NES])

    # ------------------------------------------------------------------ introspection (tests, UIs)
    def active_voices(self) -> int:
        return int(np.count_nonzero(self.vs[:, sv.V_STAGE] != sv.FREE))

    def sounding_notes(self) -> list[int]:
        return sorted(int(x) for x in self.vs[self.vs[:, sv.V_STAGE] == sv.ON, sv.V_NOTE])
