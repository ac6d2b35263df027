"""Many songs per decoder call: N MIDI streams rendered side by side, each with its own voices.

The single synth already decodes its sounding voices as one batch per block. ``BatchedSynth``
runs ``streams`` songs in lockstep, each a whole ``Synth`` of its own (voices, MIDI queue, knobs,
program changes, noise, reverb; the per-voice GRU state), and stacks the voices of every song
that plays the same instrument into that batch: one decoder call per instrument per block for all
songs. A song's decoder inputs and GRU state are its own arrays; per call, the decoder gathers the
sounding voices of its songs into consecutive rows, runs, and hands each song its rows of the
new state and of the controls. A block of shape (frames, streams * channels) holds song ``s`` in
columns ``s*channels : (s+1)*channels``; MIDI goes to one song (``stream_midi``).

The outputs equal N single synths fed the same events and blocks (the decoder's rows do not
depend on each other; the tests allow 1e-5). Event steps (voices.py) go the same way: the steps of
every song at one point of the block in one call, the frames' call split wherever any song's
voice changes state. For offline renders; the live engine runs ``Synth``.
"""
from __future__ import annotations

import numpy as np

from realtime.dsp.processor import Processor
from realtime.dsp.processors.synth import voices as sv
from realtime.dsp.processors.synth.processor import Instrument, StepCalls, Synth, steps_in, steps_out


class _SharedDecoder:
    """One instrument's decoder for all songs: the songs' sounding voices as one batch.

    Parameters
    ----------
    inst : Instrument
        The loaded decoder (its session, metadata and silence state are used; its own
        per-shape buffers are not).
    songs : int
        How many songs may play it at once.
    """

    def __init__(self, inst: Instrument, songs: int):
        self.inst = inst
        self.rows = songs * sv.MAX_VOICES
        self.t_max = -1

    def prepare(self, t_max: int) -> None:
        """Buffers for calls of up to ``t_max`` frames and every song's voices (once per t_max)."""
        if t_max == self.t_max:
            return
        inst, R = self.inst, self.rows
        self.f0 = [np.zeros((R, t), np.float32) for t in range(t_max + 1)]
        self.ld = [np.full((R, t), sv.FLOOR_DB, np.float32) for t in range(t_max + 1)]
        self.harm = [np.zeros((R, t, inst.n_harm), np.float32) for t in range(t_max + 1)]
        self.noise = [np.zeros((R, t, inst.n_noise), np.float32) for t in range(t_max + 1)]
        inst.session.allocate_state({"state": (1, R, inst.hidden)})
        self._bound: set = set()  # (frames, rows) shapes bound so far: up to t_max * rows, bound when first met
        self.silence = inst.silence_state()
        self.steps = StepCalls(inst.session, inst.hidden, inst.n_harm, inst.n_noise, R // sv.MAX_VOICES
                               * sv.ES_MAX)
        self.t_max = t_max

    def run(self, t: int, lanes: list) -> None:
        """Decode ``t`` frames of ``(lane, used)`` pairs: each lane's first ``used`` voices."""
        self._call(t, [(lane, u, lane.f0[t], lane.ld[t]) for lane, u in lanes])
        o = 0
        for lane, u in lanes:
            lane.harm[t] = self.harm[t][o:]  # the synthesis reads the first ``used`` rows only
            lane.noise[t] = self.noise[t][o:]
            o += u

    def _call(self, t: int, rows: list) -> int:
        """One call of ``t`` frames for ``(lane, used, f0, ld)``: the lanes' states in and out;
        the outputs stay in this decoder's buffers, lane after lane. Returns the rows."""
        ses = self.inst.session
        st = ses.state["state"]
        o = 0
        for lane, u, f0, ld in rows:
            self.f0[t][o:o + u] = f0[:u]
            self.ld[t][o:o + u] = ld[:u]
            st[0, o:o + u] = lane.state[0, :u]
            o += u
        key = (t, o)
        if key not in self._bound:
            ses.bind(key, {"f0_hz": self.f0[t][:o], "loudness_db": self.ld[t][:o]},
                     {"harmonics": self.harm[t][:o], "noise": self.noise[t][:o]}, state_view=lambda a: a[:, :o])
            self._bound.add(key)
        ses.run(key)
        st = ses.state["state"]
        o = 0
        for lane, u, _, _ in rows:
            lane.state[0, :u] = st[0, o:o + u]
            o += u
        return o

    def decode(self, T: int, lanes: list) -> None:
        """A block's decoding for ``(lane, used, es, n_es)``: as ``Instrument.decode`` for each
        lane, the lanes side by side (the frames' call split at every lane's event steps)."""
        if not any(n for _, _, _, n in lanes):
            rows = [(lane, u) for lane, u, _, _ in lanes if u]
            if T and rows:
                self.run(T, rows)
            return
        for lane, _, _, _ in lanes:  # written frame range by frame range: the lane's own buffers
            lane.harm[T] = lane.own_harm[T]
            lane.noise[T] = lane.own_noise[T]
        points = sorted({int(es[i, sv.ES_J]) for _, _, es, n in lanes for i in range(n)})
        a = 0
        for j in points:
            if j > a:
                self._frames(T, a, j, lanes)
                a = j
            o, done = 0, []
            for lane, _, es, n in lanes:
                i0 = next((i for i in range(n) if es[i, sv.ES_J] == j), n)
                i1 = next((i for i in range(i0, n) if es[i, sv.ES_J] != j), n)
                m = steps_in(es, i0, i1, lane.state, self.silence, self.steps.f0, self.steps.ld, self.steps.st_in, o)
                done.append((lane, es, i0, i1, o))
                o += m
            if o:
                self.steps.run(o)
            for lane, es, i0, i1, oo in done:
                steps_out(es, i0, i1, lane.state, self.silence, self.steps.h, self.steps.nz, self.steps.st_out, oo,
                          lane.es_harm, lane.es_noise)
        if a < T:
            self._frames(T, a, T, lanes)

    def _frames(self, T: int, a: int, b: int, lanes: list) -> None:
        t = b - a
        rows = [(lane, u, lane.f0[T][:, a:b], lane.ld[T][:, a:b]) for lane, u, _, _ in lanes if u]
        if not rows:
            return
        self._call(t, rows)
        o = 0
        for lane, u, _, _ in rows:
            lane.harm[T][:u, a:b] = self.harm[t][o:o + u]
            lane.noise[T][:u, a:b] = self.noise[t][o:o + u]
            o += u


class _Lane:
    """One song's side of a shared decoder: what ``Synth`` reads from an ``Instrument``, with the
    song's own GRU state and decoder inputs; the outputs are its rows of the shared call."""

    def __init__(self, decoder: _SharedDecoder):
        inst = decoder.inst
        self.decoder = decoder
        self.name, self.path, self.session = inst.name, inst.path, inst.session
        self.frame_rate, self.hidden, self.lmap, self.program = inst.frame_rate, inst.hidden, inst.lmap, inst.program
        self.n_harm, self.n_noise = inst.n_harm, inst.n_noise

    def prepare(self, t_max: int, hop: int) -> None:
        V = sv.MAX_VOICES
        self.decoder.prepare(t_max)
        self.silence = self.decoder.silence
        self.state = np.zeros((1, V, self.hidden), np.float32)
        self.f0 = [np.zeros((V, t), np.float32) for t in range(t_max + 1)]
        self.ld = [np.full((V, t), sv.FLOOR_DB, np.float32) for t in range(t_max + 1)]
        self.own_harm = [np.zeros((V, t, self.n_harm), np.float32) for t in range(t_max + 1)]
        self.own_noise = [np.zeros((V, t, self.n_noise), np.float32) for t in range(t_max + 1)]
        self.harm = list(self.own_harm)  # or views of the shared decoder's outputs (``_SharedDecoder.run``)
        self.noise = list(self.own_noise)
        self.es_harm = np.zeros((sv.ES_ROWS, self.n_harm), np.float32)
        self.es_noise = np.zeros((sv.ES_ROWS, self.n_noise), np.float32)

    def reset(self) -> None:
        self.state[:] = self.silence

    def decode(self, T: int, used: int, es: np.ndarray, n_es: int) -> None:
        """As ``Instrument.decode``, this song alone."""
        self.decoder.decode(T, [(self, used, es, n_es)])


class _Song(Synth):
    """One song of a ``BatchedSynth``: a whole synth whose instruments are lanes of shared decoders."""

    def __init__(self, decoders: dict, **values):
        super().__init__(**values)
        self._decoders = decoders

    def _load_instruments(self) -> dict:
        return {i: _Lane(d) for i, d in self._decoders.items()}


class BatchedSynth(Processor):
    """``streams`` songs side by side, one decoder call per instrument per block for all.

    Parameters
    ----------
    streams : int
        Number of songs.
    model_dir, provider, **values
        As for ``Synth`` (every song starts from these values at each ``prepare``; MIDI changes
        each song's own).

    Raises
    ------
    ModelError
        From ``prepare``, as for ``Synth``.
    ValueError
        ``streams`` below 1.

    Attributes
    ----------
    songs : list of Synth
        The songs' synths (their voices, readings and ``dropped_events``).
    """

    kind = "synth"
    params = Synth.params
    readouts = Synth.readouts

    def __init__(self, streams: int, model_dir=None, provider: str = "auto", **values):
        self.streams = int(streams)
        if self.streams < 1:
            raise ValueError(f"streams: {streams} (at least 1)")
        self._loader = Synth(model_dir, provider, **values)  # loads the decoders the songs share
        self._decoders: dict[int, _SharedDecoder] = {}
        self.songs = [_Song(self._decoders, model_dir=model_dir, provider=provider, **values)
                      for _ in range(self.streams)]
        super().__init__(**values)

    def set_param(self, param, value) -> None:
        """Set a parameter for every song (see ``Processor.set_param``)."""
        super().set_param(param, value)
        for p in (self._loader, *self.songs):
            p.set_param(param, value)

    def prepare(self, sample_rate: float, max_block: int, channels: int) -> None:
        """Load the decoders and prepare every song for ``channels`` (1 or 2) each; ``process``
        then takes blocks of (frames, streams * channels).

        Raises
        ------
        ConfigError
            ``channels`` is not 1 or 2.
        ModelError
            A decoder cannot be loaded.
        """
        super().prepare(sample_rate, max_block, channels)

    def _prepare(self) -> None:
        C = self.channels
        self.stream_channels = C
        self.channels = self.streams * C
        # every song starts from the knobs as set here: what MIDI changed in a song (a program
        # change, the bend range) belongs to that song's render, not to the next one
        for p in (self._loader, *self.songs):
            p.values[:] = self.values
        self._decoders.clear()
        for i, inst in self._loader._load_instruments().items():
            self._decoders[i] = _SharedDecoder(inst, self.streams)
        for song in self.songs:
            song.prepare(self.sample_rate, self.max_block, C)

    def reset(self) -> None:
        for song in self.songs:
            song.reset()
        self.readings.fill(0.0)

    def stream_midi(self, stream: int, status: int, data1: int = 0, data2: int = 0, offset: int = 0) -> None:
        """Queue one MIDI message for song ``stream``'s next block (see ``Synth.handle_midi``)."""
        self.songs[stream].handle_midi(status, data1, data2, offset)

    def process(self, block: np.ndarray) -> None:
        n = block.shape[0]
        a = 0
        while True:  # in parts, cut at every song's program changes (``Synth.process``), in lockstep
            m = min(song.part_cut(n - a) for song in self.songs)
            for song in self.songs:
                song.part(n - a, m)
            self._part(block[a:a + m])
            a += m
            if a >= n:
                return
            for song in self.songs:
                song.next_part()

    def _part(self, block: np.ndarray) -> None:
        n, C = block.shape[0], self.stream_channels
        halves, calls = [], {}
        for song in self.songs:
            inst, T, used = song.controls(n)
            halves.append((inst, T, used))
            n_es = song.n_steps
            if (T and used) or n_es:
                calls.setdefault(inst.decoder, []).append((inst, used if T else 0, song._es, n_es))
        T = halves[0][1]  # the songs move in lockstep: the same frames in every block
        for decoder, lanes in calls.items():
            decoder.decode(T, lanes)
        self.readings.fill(0.0)
        for s, (song, (inst, T, used)) in enumerate(zip(self.songs, halves)):
            song.synthesize(block[:, s * C:(s + 1) * C], inst, T, used)
            self.readings[:2] += song.readings[:2]  # held notes and voices add up
        self.readings[2] = np.nan  # "playing" is each song's own: none for the batch
