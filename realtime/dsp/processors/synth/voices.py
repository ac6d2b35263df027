"""MIDI to per-voice decoder inputs for the DDSP synth: voice allocation, envelopes, pitch.

One Numba kernel per block (``controls``) applies the block's MIDI events at their sample offsets
and, at every decoder frame boundary inside the block, writes each voice's f0 (Hz) and loudness
(dB) for the decoder. Everything is state in preallocated arrays (``vs`` per voice, ``g`` global),
so the audio path allocates nothing and garbage MIDI can only be ignored or clamped.

Why the envelope is evaluated one frame ahead: the render kernel ramps each frame's controls
over the following frame, so the value reached at the end of that ramp (boundary + hop) is the
one to ask the decoder for; a note that starts at a boundary is then audible from that sample.
Envelopes are closed-form in absolute sample time (note-on/off times are stored), so an event's
offset inside the block changes the result to the sample. A moved Attack or Release knob takes
over at the block's first frame boundary, where each sounding voice's envelope is re-based so its
level goes on from where it is (``_rebase_envelopes``). Lowering the Voices knob releases the
oldest held notes down to the new count (notes kept only by the sustain pedal first).

Sample-accurate notes: each voice keeps its own frame grid, ``V_DELTA`` samples (0..hop-1) after
the decoder's. The frame decoded at boundary b is the voice's frame from b + delta: its inputs are
evaluated at b + delta + hop and the render kernel ramps to its controls over [b + delta,
b + delta + hop) (``lag`` tells it each frame's delta). A note-on, or a release starting now, at
sample t re-anchors its voice: delta = t mod hop. Between boundaries that also adds an event step
(a row of ``es``): one decoder step for that voice with the event applied (inputs at t + hop), from
the decoder's silence state for a (re)started voice, else from the voice's state; the render
kernel cuts in at t itself (silent before it, from phase 0 if the voice was silent), ramps to the
step's controls by t + hop, where the next boundary's frame takes over. So a note, its attack and
its release move with its events to the sample, and the decoder sees the same inputs wherever
the note falls in the frame grid (the vibrato LFO and the controllers stay on the decoder's
grid). Decoding is causal: a frame is decoded at b, before b + delta. A voice's decoder state
changes (the silence state of a new note, a step's state) where its event is in time: before the
frame that follows it, which may be in the middle of a block's frames (the caller splits its
decoder call there), so the output does not depend on the block size. Left to the frames (up
to a frame late, as before): a voice's second step from its own state before the same boundary,
releases the minimum gate delays or the Voices knob starts, steps past ES_MAX in one block (a
note started there begins at the next frame, from the silence state). All sound off (CC120) takes back
the block's steps of the voices it stops.

Channel 10 (``DRUM_CHANNEL``) is General MIDI percussion: its messages are left alone, as a GM
melodic instrument does (a drum track played as violin notes), unless the "Channel 10" knob
(``K_CH10``) says it is an ordinary channel: pads and keyboards that send on channel 10 live (what
ends sound, note-offs and the all-off messages, passes either way). Every controller acts per MIDI
channel, on the notes of that channel (a voice keeps its note's channel, ``V_CH``), as MIDI has
it: in a GM file each track has its own. Pitch bend and its range (the knob's, or what RPN 0 set
for the channel), volume (CC7: each voice's output gain, ``voice_gain``, passed in ``act``, which
the renderer ramps in over the voice's next frame; a quiet second track's CC7 made the first
track's melody 11 dB quieter), expression (CC11 -> loudness, so timbre follows), mod wheel (CC1 ->
vibrato depth), sustain (CC64), all sound off (CC120), reset controllers (CC121: the channel's mod
wheel, pedal, bend, expression and RPN selection), all notes off (CC123: a note-off for each of the channel's
notes, so with its pedal down they sound on until it is up, as MIDI 1.0 says).
A note-on with every voice taken steals, in this order: a releasing voice (the quietest), a note
kept only by the sustain pedal (its key is up; the oldest), a key still held down (the oldest).
Program changes are the processor's: it cuts the block at each one and switches instrument before
the notes of the part it starts (``processor._part_cut``, ``_block_program``); here they change nothing.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

MAX_VOICES = 32
MAX_EVENTS = 1024  # per block; more are dropped, controllers first (and counted: MidiQueue)
STACK = 16  # held keys remembered in mono mode

# knob indices: the Synth processor declares its params in exactly this order
K_INSTR, K_GAIN, K_ATTACK, K_RELEASE, K_VIB_RATE, K_VIB_DEPTH, K_BALANCE, K_BRIGHT, K_REVERB, K_POLY, \
    K_BEND, K_MODE, K_PORTA, K_CH10 = range(14)

# per-voice fields
# V_SEQ: the note-on's ordinal; V_ATK_T: where the attack ramp starts at the current Attack knob (the
# note-on time until the knob moves; V_ON_T stays the note-on, for the minimum gate)
# V_MARK: what the event being applied did to the voice (MARK_*; read and cleared after each event);
# V_ES_B: the decoder boundary before which the voice's latest event step took effect (-1: none);
# V_DELTA: where the voice's frames start after the decoder's boundaries (samples, 0..hop-1)
# V_RESTRUCK: when its note-on re-struck its key, still held by another voice (-1: it did not); a
# note-off for that key at that same instant is the old note's. Per voice, not one for the synth: a
# chord re-struck (its note-ons, then the old notes' note-offs) kept only its last note
V_NOTE, V_CH, V_VEL, V_GATE, V_SUST, V_STAGE, V_ON_T, V_OFF_T, V_ENV_OFF, V_P_START, V_P_TARGET, \
    V_G_T, V_G_LEN, V_LAST_F0, V_PITCH, V_SEQ, V_ATK_T, V_MARK, V_ES_B, V_DELTA, V_RESTRUCK, NVF = range(22)
FREE, ON, RELEASED = 0, 1, 2
MARK_RELEASE, MARK_START, MARK_RESTART = 1.0, 2.0, 3.0  # a later mark of one event wins if higher

# event steps (see the module docstring): rows of es[ES_ROWS, NES], in the order of their events:
# at most ES_MAX of them a block, then only resets (no decoder step) for the voices (re)started later.
# ES_V: the voice; ES_J: the block's frame index before which its state takes effect (T: after the
# block's frames); ES_T: the event's offset in the block; ES_F0 / ES_LD: the step's decoder inputs;
# ES_LAST: 1 if this row's state is the one the voice goes on from (the last of its rows with that ES_J);
# ES_GAIN: the voice's output gain at the event (``voice_gain``)
ES_MAX = 64
ES_ROWS = ES_MAX + MAX_VOICES
ES_V, ES_J, ES_T, ES_KIND, ES_F0, ES_LD, ES_LAST, ES_GAIN, NES = range(9)
# ES_RESET: a (re)start on a frame boundary: the voice's state becomes the silence state there, no
# step (the frame itself is the note's first); ES_FRESH: a step from the silence state (a new note
# between boundaries); ES_ON: a step from the voice's own state (a release, a mono re-attack)
ES_RESET, ES_FRESH, ES_ON = 0.0, 1.0, 2.0

# global fields
# G_ATK / G_REL: the attack and release (samples) the envelopes run at: the knobs' values at the last
# re-base (0 until the first block after a reset)
# G_NES: how many event steps (rows of es) the block ``controls`` ran last has
G_LFO, G_NSTACK, G_DROPPED, G_SEQ, G_ATK, G_REL, G_NES, _G_SCALARS = range(8)
# per MIDI channel c (0-15), as MIDI has them (a GM file's tracks each on a channel of their own: one
# track's pedal, mod wheel, bend range or All Notes Off never reaches another's notes):
# g[G_BEND + c] (-1..1), g[G_EXPR + c], g[G_VOL + c], g[G_MODW + c] (0..1), g[G_SUST + c] (pedal
# down: 1), g[G_RPN_MSB + c] / g[G_RPN_LSB + c] (the RPN data entry goes to; 127: none), g[G_RANGE + c]
# (the bend range an RPN 0 set, semitones; -1: the Bend range knob's)
G_BEND, G_EXPR, G_VOL, G_MODW, G_SUST, G_RPN_MSB, G_RPN_LSB, G_RANGE = (_G_SCALARS + 16 * k for k in range(8))
NG = _G_SCALARS + 16 * 8

FLOOR_DB = -100.0
DRUM_CHANNEL = 9  # MIDI channel 10 (0-based 9): GM percussion, not pitched notes
# a note-off sooner than this after its note-on releases from this point (FluidSynth's min-note-length):
# a zero-length or one-tick note (drum-style notes in files) is heard instead of starting its release
# from the silent start of its attack
MIN_GATE_MS = 10.0
FREE_BELOW_DB = -90.0  # a released voice is freed when its envelope falls below this


def new_state():
    """(voice state, global state, mono key stack) arrays, reset."""
    vs = np.zeros((MAX_VOICES, NVF), np.float64)
    g = np.zeros(NG, np.float64)
    stack = np.zeros(STACK, np.float64)
    reset_state(vs, g, stack)
    return vs, g, stack


@njit(nogil=True, cache=True)
def reset_state(vs, g, stack):
    vs[:] = 0.0
    vs[:, V_NOTE] = -1.0
    vs[:, V_LAST_F0] = 440.0
    vs[:, V_PITCH] = 69.0
    vs[:, V_ES_B] = -1.0
    vs[:, V_RESTRUCK] = -1.0
    g[:] = 0.0
    g[G_EXPR:G_EXPR + 16] = 1.0
    g[G_VOL:G_VOL + 16] = 100.0 / 127.0
    g[G_RPN_MSB:G_RPN_MSB + 16] = 127.0
    g[G_RPN_LSB:G_RPN_LSB + 16] = 127.0
    g[G_RANGE:G_RANGE + 16] = -1.0
    stack[:] = -1.0


@njit(nogil=True, cache=True)
def _attack_db(vs, v, t, atk):
    """The attack: the amplitude ramps linearly from 0 to 1 over atk samples."""
    a = (t - vs[v, V_ATK_T]) / atk
    if a >= 1.0:
        return 0.0
    if a <= 1e-5:
        return FLOOR_DB
    return 20.0 * math.log10(a)


@njit(nogil=True, cache=True)
def _env_db(vs, v, t, atk, rel):
    st = vs[v, V_STAGE]
    if st == ON:
        return _attack_db(vs, v, t, atk)
    if st == RELEASED:
        if t < vs[v, V_OFF_T]:  # within a short note's minimum gate: still the attack
            return min(vs[v, V_ENV_OFF], _attack_db(vs, v, t, atk))
        return vs[v, V_ENV_OFF] - 60.0 * (t - vs[v, V_OFF_T]) / rel
    return FLOOR_DB


@njit(nogil=True, cache=True)
def _rebase_envelopes(vs, g, t0, atk, rel):
    """The Attack or Release knob moved (atk, rel: the new values in samples; the old ones are in
    g): each sounding voice goes on from the level it has at t0 (on its own grid: t0 + delta), at
    the new rate. The envelope is closed-form in the knob, so the new value alone moved every
    voice's level at once (+33 dB)."""
    atk0 = g[G_ATK]
    rel0 = g[G_REL]
    if atk0 == atk and rel0 == rel:
        return
    g[G_ATK] = atk
    g[G_REL] = rel
    for v in range(MAX_VOICES):
        t = t0 + vs[v, V_DELTA]  # the voice's time: its last frame's value was asked for here
        st = vs[v, V_STAGE]
        releasing = st == RELEASED and t >= vs[v, V_OFF_T]
        if releasing and rel != rel0:  # from its level now
            vs[v, V_ENV_OFF] -= 60.0 * (t - vs[v, V_OFF_T]) / rel0
            vs[v, V_OFF_T] = t
        elif st != FREE and not releasing and atk != atk0:  # in its attack, or held: the same fraction
            done = min(1.0, (t - vs[v, V_ATK_T]) / atk0)
            vs[v, V_ATK_T] = t - done * atk
            if st == RELEASED:  # a short note's release starts where the new attack is at its end
                vs[v, V_ENV_OFF] = _attack_db(vs, v, vs[v, V_OFF_T], atk)


@njit(nogil=True, cache=True)
def _pitch(vs, v, t):
    """Note pitch (semitones) with an optional linear glide (portamento)."""
    gl = vs[v, V_G_LEN]
    if gl > 0.0:
        x = (t - vs[v, V_G_T]) / gl
        if x < 1.0:
            if x < 0.0:
                x = 0.0
            return vs[v, V_P_START] + (vs[v, V_P_TARGET] - vs[v, V_P_START]) * x
    return vs[v, V_P_TARGET]


@njit(nogil=True, cache=True)
def _release(vs, v, t, atk, rel, sr):
    if vs[v, V_STAGE] != ON:
        return
    t0 = t
    t = max(t, vs[v, V_ON_T] + MIN_GATE_MS * 1e-3 * sr)  # the release starts after the minimum gate
    e = _env_db(vs, v, t, atk, rel)
    vs[v, V_STAGE] = RELEASED
    vs[v, V_OFF_T] = t
    vs[v, V_ENV_OFF] = e
    vs[v, V_GATE] = 0.0
    vs[v, V_SUST] = 0.0
    if t == t0:  # it starts now (a release the gate delays is for the frames, which know its time)
        vs[v, V_MARK] = max(vs[v, V_MARK], MARK_RELEASE)


@njit(nogil=True, cache=True)
def _start(vs, v, note, ch, vel, t, glide_from, porta, restart):
    vs[v, V_NOTE] = note
    vs[v, V_CH] = ch
    vs[v, V_VEL] = vel
    vs[v, V_GATE] = 1.0
    vs[v, V_SUST] = 0.0
    vs[v, V_STAGE] = ON
    vs[v, V_ON_T] = t
    vs[v, V_ATK_T] = t
    vs[v, V_P_TARGET] = note
    vs[v, V_RESTRUCK] = -1.0
    if glide_from >= 0.0 and porta > 0.0:
        vs[v, V_P_START] = glide_from
        vs[v, V_G_T] = t
        vs[v, V_G_LEN] = porta
    else:
        vs[v, V_G_LEN] = 0.0
    # a (re)started voice begins from the decoder's silence state: notes do not depend on what
    # the voice played before, and offline renders stay deterministic. Not here: ``controls``
    # turns the mark into an event step, which sets the state where the event is in time
    vs[v, V_MARK] = MARK_RESTART if restart else max(vs[v, V_MARK], MARK_START)


@njit(nogil=True, cache=True)
def _glide(vs, note, t, porta):
    """Mono legato: the sounding voice moves to ``note`` from where its pitch is now, over
    ``porta`` samples (0: at once), without a new attack."""
    cur = _pitch(vs, 0, t)
    vs[0, V_NOTE] = note
    vs[0, V_P_TARGET] = note
    if porta > 0.0:
        vs[0, V_P_START] = cur
        vs[0, V_G_T] = t
        vs[0, V_G_LEN] = porta
    else:
        vs[0, V_G_LEN] = 0.0


@njit(nogil=True, cache=True)
def _stack_remove(stack, g, key, span=1.0):
    """The mono key stack without ``key`` (note + 128 * channel), or with ``span`` 128 and ``key``
    128 * channel, without any key of that channel."""
    n = int(g[G_NSTACK])
    j = 0
    for i in range(n):
        if stack[i] // span != key // span:
            stack[j] = stack[i]
            j += 1
    for i in range(j, n):
        stack[i] = -1.0
    g[G_NSTACK] = j


@njit(nogil=True, cache=True)
def _stack_push(stack, g, note):
    _stack_remove(stack, g, note)
    n = int(g[G_NSTACK])
    if n == stack.shape[0]:  # full: forget the oldest key
        for i in range(n - 1):
            stack[i] = stack[i + 1]
        n -= 1
    stack[n] = note
    g[G_NSTACK] = n + 1


@njit(nogil=True, cache=True)
def _count(vs, stage):
    n = 0
    for v in range(MAX_VOICES):
        if vs[v, V_STAGE] == stage:
            n += 1
    return n


@njit(nogil=True, cache=True)
def _oldest_held(vs):
    """The held voice to give up first (-1: none): the oldest note kept only by the sustain pedal
    (its key is up), else the oldest whose key is still down. A keyboardist's held bass outlives
    the melody notes the pedal rings on. Oldest by note-on order, as a chord's notes share one
    start time."""
    best_up = -1
    best_down = -1
    oldest_up = 1e300
    oldest_down = 1e300
    for v in range(MAX_VOICES):
        if vs[v, V_STAGE] == ON:
            seq = vs[v, V_SEQ]
            if vs[v, V_GATE] == 0.0:  # the pedal alone holds it
                if seq < oldest_up:
                    oldest_up = seq
                    best_up = v
            elif seq < oldest_down:
                oldest_down = seq
                best_down = v
    return best_up if best_up >= 0 else best_down


@njit(nogil=True, cache=True)
def _free_voice(vs, poly):
    """The first free voice, or -1 when poly voices sound already (all 32 are searched: a lowered
    Voices knob leaves release tails above the new limit)."""
    if MAX_VOICES - _count(vs, FREE) >= poly:
        return -1
    for v in range(MAX_VOICES):
        if vs[v, V_STAGE] == FREE:
            return v
    return -1


@njit(nogil=True, cache=True)
def _steal(vs, t, atk, rel, poly):
    """The voice a note-on takes when poly voices sound: the quietest released one, unless poly are
    held (so no more than poly ever are): then the oldest held, pedal-only notes before keys still
    down (``_oldest_held``)."""
    if _count(vs, ON) >= poly:
        return _oldest_held(vs)
    best = -1
    lowest = 1e9
    for v in range(MAX_VOICES):
        if vs[v, V_STAGE] == RELEASED:
            e = _env_db(vs, v, t, atk, rel)
            if e < lowest:
                lowest = e
                best = v
    return best


@njit(nogil=True, cache=True)
def _limit_held(vs, g, t, kv, sr):
    """The Voices knob went down: the oldest held notes are released (with the normal release, no
    click; pedal-only notes first, see ``_oldest_held``) until no more than the knob's count are
    held. Mono mode plays voice 0 alone."""
    if kv[K_MODE] >= 0.5:
        return
    poly = min(MAX_VOICES, max(1, int(kv[K_POLY])))
    for _ in range(_count(vs, ON) - poly):
        _release(vs, _oldest_held(vs), t, g[G_ATK], g[G_REL], sr)


@njit(nogil=True, cache=True)
def _note_on(vs, g, stack, note, ch, vel, t, kv, sr):
    atk = g[G_ATK]
    rel = g[G_REL]
    porta = kv[K_PORTA] * 1e-3 * sr
    if kv[K_MODE] >= 0.5:  # mono: voice 0 only, legato keeps the envelope going
        _stack_push(stack, g, note + 128.0 * ch)  # a key is its note on its channel
        if vs[0, V_STAGE] == ON:
            _glide(vs, note, t, porta)
            vs[0, V_CH] = ch
            vs[0, V_GATE] = 1.0
            vs[0, V_SUST] = 0.0
        else:
            released = vs[0, V_STAGE] == RELEASED
            prev = _pitch(vs, 0, t) if released else -1.0
            # in the last note's release, the attack goes on from the level the voice is at, as it
            # goes on from its own decoder state: from silence it cut the release to a hole (20 dB
            # deep within 5 ms, under a slow attack), where poly mode lets the release ring on
            lvl = 10.0 ** (_env_db(vs, 0, t, atk, rel) / 20.0) if released else 0.0
            _start(vs, 0, note, ch, vel, t, prev, porta, not released)
            vs[0, V_ATK_T] = t - lvl * atk
        return
    poly = min(MAX_VOICES, max(1, int(kv[K_POLY])))
    restruck = False
    for v in range(MAX_VOICES):  # the same key again: release the old voice first
        if vs[v, V_STAGE] == ON and vs[v, V_NOTE] == note and vs[v, V_CH] == ch:
            # its key is still down: its note-off may come at this very instant. Not for a voice begun
            # within the minimum gate: a doubled note-on (merged sources, a MIDI loop; live, one JACK
            # period's messages share a stamp, or straddle two) whose one note-off must end the note
            if vs[v, V_GATE] == 1.0 and t - vs[v, V_ON_T] >= MIN_GATE_MS * 1e-3 * sr:
                restruck = True
            _release(vs, v, t, atk, rel, sr)
    best = _free_voice(vs, poly)
    if best < 0:
        best = _steal(vs, t, atk, rel, poly)
    _start(vs, best, note, ch, vel, t, -1.0, 0.0, True)
    if restruck:
        vs[best, V_RESTRUCK] = t
    g[G_SEQ] += 1.0
    vs[best, V_SEQ] = g[G_SEQ]


@njit(nogil=True, cache=True)
def _note_off(vs, g, stack, note, ch, t, kv, sr):
    atk = g[G_ATK]
    rel = g[G_REL]
    sustain = g[G_SUST + int(ch)] >= 0.5
    # in either mode: a key held in mono and let go after a switch to poly stayed on mono's list, and
    # back in mono a later key's release fell back to it (a note sounding with no key down)
    _stack_remove(stack, g, note + 128.0 * ch)
    if kv[K_MODE] >= 0.5:
        if vs[0, V_STAGE] == ON and vs[0, V_NOTE] == note and vs[0, V_CH] == ch:
            n = int(g[G_NSTACK])
            if n > 0:  # fall back to the last key still held, legato
                back = stack[n - 1]
                porta = kv[K_PORTA] * 1e-3 * sr
                _glide(vs, back % 128.0, t, porta)
                vs[0, V_CH] = back // 128.0
            elif sustain:
                vs[0, V_GATE] = 0.0
                vs[0, V_SUST] = 1.0
            else:
                _release(vs, 0, t, atk, rel, sr)
        first = 1  # voices a poly mode left held before the switch to mono: released as in poly
    else:
        first = 0
    for v in range(first, MAX_VOICES):
        if vs[v, V_STAGE] == ON and vs[v, V_RESTRUCK] == t and vs[v, V_NOTE] == note and vs[v, V_CH] == ch:
            # a file that re-strikes a key writes the new note-on before the old note's note-off at the
            # same tick: that note-off ends the old note (released already), not the one just begun
            vs[v, V_RESTRUCK] = -1.0
            return
    for v in range(first, MAX_VOICES):  # note-off without note-on simply matches nothing
        if vs[v, V_STAGE] == ON and vs[v, V_GATE] == 1.0 and vs[v, V_NOTE] == note and vs[v, V_CH] == ch:
            if sustain:
                vs[v, V_GATE] = 0.0
                vs[v, V_SUST] = 1.0
            else:
                _release(vs, v, t, atk, rel, sr)


@njit(nogil=True, cache=True)
def _all_off(vs, g, stack, t, kv, sr, hard, c):
    """Channel c's voices: hard (CC120, all sound off), each stops at once. Else (CC123, all notes
    off): a note-off for each note, so with the channel's pedal down the notes sound on until it is
    up. The channel's keys leave the mono key stack (a later legato fallback would sound one)."""
    atk = g[G_ATK]
    rel = g[G_REL]
    sustain = g[G_SUST + c] >= 0.5
    _stack_remove(stack, g, 128.0 * c, 128.0)  # the channel's keys: none of them is down now
    for v in range(MAX_VOICES):
        if vs[v, V_CH] != c:
            continue
        if hard:
            vs[v, V_STAGE] = FREE
            vs[v, V_GATE] = 0.0
            vs[v, V_SUST] = 0.0
        elif sustain:
            if vs[v, V_STAGE] == ON:
                vs[v, V_GATE] = 0.0
                vs[v, V_SUST] = 1.0
        else:
            _release(vs, v, t, atk, rel, sr)


@njit(nogil=True, cache=True)
def apply_event(vs, g, stack, status, d1, d2, t, kv, sr) -> int:
    """One channel message at absolute sample time t. Anything that is not a channel voice
    message (system, sysex, realtime, data bytes, NaN) is ignored; data values are clamped.
    Returns 1 + the channel of an all sound off (CC120, acted on: that channel's voices stopped),
    else 0."""
    if not (status == status and d1 == d1 and d2 == d2):  # NaN
        return 0
    s = int(status)
    if s < 0x80 or s > 0xEF:
        return 0
    a = min(127, max(0, int(d1)))
    b = min(127, max(0, int(d2)))
    typ = s & 0xF0
    if s & 0x0F == DRUM_CHANNEL and kv[K_CH10] < 0.5:  # GM percussion: not this instrument's notes,
        # controllers or bend (unless the knob says channel 10 is an ordinary channel here). What ends
        # sound still passes: notes begun while the knob was on must end (a panic, a lost port, the
        # file's end), and a note-off or pedal up starts nothing
        ends = typ == 0x80 or (typ == 0x90 and b == 0) or (typ == 0xB0 and (a == 120 or a == 123 or a == 121
                                                                            or (a == 64 and b < 64)))
        if not ends:
            return 0
    c = s & 0x0F
    ch = float(c)
    if typ == 0x90 and b > 0:
        _note_on(vs, g, stack, float(a), ch, float(b), t, kv, sr)
    elif typ == 0x80 or typ == 0x90:
        _note_off(vs, g, stack, float(a), ch, t, kv, sr)
    elif typ == 0xE0:
        g[G_BEND + c] = ((b << 7) | a) / 8192.0 - 1.0
    elif typ == 0xB0:
        if a == 1:
            g[G_MODW + c] = b / 127.0
        elif a == 7:
            g[G_VOL + c] = b / 127.0
        elif a == 11:
            g[G_EXPR + c] = b / 127.0
        elif a == 64:
            if b < 64:
                _pedal_up(vs, g, c, t, sr)
            g[G_SUST + c] = 1.0 if b >= 64 else 0.0
        elif a == 101:
            g[G_RPN_MSB + c] = b
        elif a == 100:
            g[G_RPN_LSB + c] = b
        elif a == 99 or a == 98:  # an NRPN is selected: data entry no longer goes to an RPN
            g[G_RPN_MSB + c] = 127.0
            g[G_RPN_LSB + c] = 127.0
        elif a == 6:  # data entry: RPN 0 = the channel's pitch-bend range (semitones)
            if g[G_RPN_MSB + c] == 0 and g[G_RPN_LSB + c] == 0:
                g[G_RANGE + c] = min(24.0, float(b))
        elif a == 120:
            _all_off(vs, g, stack, t, kv, sr, True, c)
            return c + 1
        elif a == 121:
            g[G_BEND + c] = 0.0
            g[G_MODW + c] = 0.0
            g[G_EXPR + c] = 1.0
            g[G_RPN_MSB + c] = 127.0  # no parameter selected (RP-015): a stray data entry changes nothing
            g[G_RPN_LSB + c] = 127.0
            _pedal_up(vs, g, c, t, sr)
            g[G_SUST + c] = 0.0
        elif a == 123:
            _all_off(vs, g, stack, t, kv, sr, False, c)
    return 0


@njit(nogil=True, cache=True)
def _pedal_up(vs, g, c, t, sr):
    """Channel c's sustain pedal lifted: its notes held only by the pedal are released."""
    if g[G_SUST + c] < 0.5:
        return
    atk = g[G_ATK]
    rel = g[G_REL]
    for v in range(MAX_VOICES):
        if vs[v, V_SUST] == 1.0 and vs[v, V_CH] == c:
            _release(vs, v, t, atk, rel, sr)


@njit(nogil=True, cache=True)
def _voice_inputs(vs, v, tau, e_db, bend, vib, expr_db, lmap, sr):
    """Voice v's decoder inputs for a frame whose ramp reaches its value at tau: (f0 Hz, loudness
    dB, pitch)."""
    pitch = _pitch(vs, v, tau)
    f0 = 440.0 * 2.0 ** ((pitch + bend + vib - 69.0) / 12.0)
    # at most Nyquist, where the render mutes it: a note above it at a low rate is silent, not
    # another note (held at 0.45 * sr, notes 118-126 at 16 kHz all played 7.2 kHz)
    f0 = min(max(f0, 20.0), 0.5 * sr)
    vel = max(vs[v, V_VEL], 1.0)
    base = lmap[0] + lmap[1] * 40.0 * math.log10(vel / 127.0) + lmap[2] * (pitch - 60.0) / 12.0
    return f0, max(FLOOR_DB, base + e_db + expr_db), pitch


@njit(nogil=True, cache=True)
def _bend_expr(vs, v, g, kv):
    """Voice v's channel's pitch bend (semitones), expression (dB on the decoder's loudness) and mod
    wheel (0..1)."""
    c = int(vs[v, V_CH])
    span = g[G_RANGE + c] if g[G_RANGE + c] >= 0.0 else kv[K_BEND]
    return g[G_BEND + c] * span, 40.0 * math.log10(max(g[G_EXPR + c], 1e-3)), g[G_MODW + c]


VOICE_GAIN_FLOOR = 1e-9  # -180 dB: inaudible, yet a sounding voice (``voice_gain``)


@njit(nogil=True, cache=True)
def voice_gain(vs, v, g):
    """Voice v's output gain: its channel's volume (CC7) squared, as it was on the whole output. Never
    quite 0 (``VOICE_GAIN_FLOOR``): a gain of 0 marks a voice that does not sound, and a note whose
    channel is faded to 0 and back would start again from silence (a re-attack) instead of going on."""
    vol = g[G_VOL + int(vs[v, V_CH])]
    return max(vol * vol, VOICE_GAIN_FLOOR)


@njit(nogil=True, cache=True)
def _event_steps(vs, g, kv, lmap, sr, atk, rel, es, t, off, j, b, hop, state, silence):
    """After one event at absolute sample t (block offset ``off``, applied before frame j, the
    decoder's boundary b): the voices it marked are re-anchored there and get their event steps
    (module docstring). A voice's second step from its own state before the same boundary is left
    to the frames (it would need the first one's state); a step at the same instant as the
    voice's previous one replaces it."""
    delta = t % hop
    for v in range(MAX_VOICES):
        mk = vs[v, V_MARK]
        if mk == 0.0:
            continue
        vs[v, V_MARK] = 0.0
        if mk == MARK_RESTART:
            kind = ES_RESET if delta == 0.0 else ES_FRESH
        elif delta == 0.0:  # on the decoder's boundary: its frame, decoded after this event, starts now
            vs[v, V_DELTA] = 0.0
            continue
        elif vs[v, V_ES_B] == b:
            continue
        else:
            kind = ES_ON
        r = -1
        n_es = int(g[G_NES])
        for k in range(n_es):
            if es[k, ES_V] == v and es[k, ES_J] == j and es[k, ES_T] == off:
                r = k
        if r < 0:
            if n_es >= ES_MAX:  # more than ES_MAX steps in one block: this one comes with the next frame
                if kind == ES_ON:
                    continue
                if n_es == es.shape[0]:  # and no row left for its reset: its state is silence from now on
                    vs[v, V_DELTA] = 0.0
                    for h in range(silence.shape[0]):
                        state[0, v, h] = silence[h]
                    for k in range(n_es):
                        if es[k, ES_V] == v:
                            es[k, ES_LAST] = 0.0
                    continue
                kind = ES_RESET  # a (re)start at frame j's boundary, from the silence state there
            r = n_es
            n_es += 1
            g[G_NES] = n_es
        vs[v, V_DELTA] = 0.0 if kind == ES_RESET else delta
        for k in range(n_es):
            if es[k, ES_V] == v and es[k, ES_J] == j:
                es[k, ES_LAST] = 0.0
        es[r, ES_V] = v
        es[r, ES_J] = j
        es[r, ES_T] = off
        es[r, ES_KIND] = kind
        es[r, ES_LAST] = 1.0
        es[r, ES_GAIN] = voice_gain(vs, v, g)
        vs[v, V_ES_B] = b
        if kind != ES_RESET:
            # the inputs of a frame of the voice's grid that starts here: the envelope where its
            # ramp ends, the vibrato LFO where the decoder's last frame left it
            bend, expr_db, mod = _bend_expr(vs, v, g, kv)
            vib = kv[K_VIB_DEPTH] * 0.01 * mod * math.sin(2.0 * math.pi * g[G_LFO])
            f0, ld, _ = _voice_inputs(vs, v, t + hop, _env_db(vs, v, t + hop, atk, rel), bend, vib, expr_db, lmap, sr)
            es[r, ES_F0] = f0
            es[r, ES_LD] = ld


@njit(nogil=True, cache=True)
def _drop_silenced_steps(vs, g, es, c):
    """All sound off on channel c: the block's steps of the voices it stopped play nothing (as
    before a frame); another channel's voice freed earlier in the block keeps its release step."""
    for k in range(int(g[G_NES])):
        v = int(es[k, ES_V])
        if vs[v, V_STAGE] == FREE and vs[v, V_CH] == c:
            es[k, ES_KIND] = ES_RESET
            es[k, ES_LAST] = 0.0


@njit(nogil=True, cache=True)
def event_offset(off, n):
    """A queued event's offset as a block of n frames takes it: a whole sample in the block (NaN: 0)."""
    if not off == off:
        off = 0.0
    return float(math.floor(min(float(n - 1), max(0.0, off))))


@njit(nogil=True, cache=True)
def controls(ev, n_ev, order, n, pos, hop, sr, kv, g, vs, stack, lmap, f0_out, ld_out, act, lag, state, silence,
             es):
    """Apply the block's events (ev[i] = offset, status, d1, d2) at their offsets and fill the
    decoder inputs for each frame boundary in the block (f0_out/ld_out: (voices, T), act:
    (T, voices) the output gain of each voice that sounds (``voice_gain``), 0 = silent, lag:
    (T, voices) each voice's delta) and the block's event steps
    (es, g[G_NES] of them; their decoder state goes into ``state`` only when they are decoded,
    except past ES_MAX). Returns how many leading voices the decoder must run for the frames
    (0 = none)."""
    # whole samples in the block (the voices' grids), NaN at its start: cleaned before the sort, as
    # the steps' times must come out in order (a NaN left in place sorted nowhere)
    for i in range(n_ev):
        ev[i, 0] = event_offset(ev[i, 0], n)
    # stable insertion sort of the events by offset (usually 0-3 events)
    for i in range(n_ev):
        order[i] = i
    for i in range(1, n_ev):
        k = order[i]
        j = i - 1
        while j >= 0 and ev[order[j], 0] > ev[k, 0]:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = k
    first = (hop - pos % hop) % hop
    T = 0 if first >= n else (n - 1 - first) // hop + 1
    atk = max(1.0, kv[K_ATTACK] * 1e-3 * sr)
    rel = max(1.0, kv[K_RELEASE] * 1e-3 * sr)
    if g[G_ATK] == 0.0:  # the first block since a reset
        g[G_ATK] = atk
        g[G_REL] = rel
    _limit_held(vs, g, float(pos), kv, sr)
    vs[:, V_MARK] = 0.0  # the Voices knob's releases: at the block's start, wherever that is
    g[G_NES] = 0.0
    vib_inc = kv[K_VIB_RATE] * hop / sr
    used = 0
    ie = 0
    for j in range(T + 1):
        lim = first + j * hop if j < T else n
        while ie < n_ev:
            e = order[ie]
            off = ev[e, 0]
            if j < T and off > lim:
                break
            silenced = apply_event(vs, g, stack, ev[e, 1], ev[e, 2], ev[e, 3], pos + off, kv, sr)
            if silenced:
                _drop_silenced_steps(vs, g, es, silenced - 1)
            _event_steps(vs, g, kv, lmap, sr, atk, rel, es, pos + off, off, j, float(pos + first + j * hop),
                         float(hop), state, silence)
            ie += 1
        if j == T:
            break
        if j == 0:
            # a moved Attack or Release knob takes over here, at the time the previous frame's
            # value was asked for: the decoder's loudness goes on from it without a step
            _rebase_envelopes(vs, g, pos + lim, atk, rel)
        b_tau = pos + lim + hop  # the time this frame's ramp reaches its value (on the decoder's grid)
        g[G_LFO] = (g[G_LFO] + vib_inc) % 1.0
        lfo = kv[K_VIB_DEPTH] * 0.01 * math.sin(2.0 * math.pi * g[G_LFO])  # times each channel's mod wheel
        for v in range(MAX_VOICES):
            lag[j, v] = vs[v, V_DELTA]
            tau = b_tau + vs[v, V_DELTA]
            st = vs[v, V_STAGE]
            if st != FREE:
                e_db = _env_db(vs, v, tau, atk, rel)
                if st == RELEASED and e_db < FREE_BELOW_DB and tau >= vs[v, V_OFF_T]:
                    vs[v, V_STAGE] = FREE
                    st = FREE
            if st == FREE:
                act[j, v] = 0.0
                if v < f0_out.shape[0]:
                    f0_out[v, j] = vs[v, V_LAST_F0]
                    ld_out[v, j] = FLOOR_DB
                continue
            bend, expr_db, mod = _bend_expr(vs, v, g, kv)
            f0, ld, pitch = _voice_inputs(vs, v, tau, e_db, bend, lfo * mod, expr_db, lmap, sr)
            vs[v, V_PITCH] = pitch
            vs[v, V_LAST_F0] = f0
            f0_out[v, j] = f0
            ld_out[v, j] = ld
            act[j, v] = voice_gain(vs, v, g)  # never 0 while it sounds (its floor)
            if v + 1 > used:
                used = v + 1
    return used


def frame_count(pos: int, n: int, hop: int) -> int:
    """Number of frame boundaries (absolute sample multiples of hop) in [pos, pos + n)."""
    first = (hop - pos % hop) % hop
    return 0 if first >= n else (n - 1 - first) // hop + 1
