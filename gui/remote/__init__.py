"""The engine in a process of its own; the window is a client over shared memory.

Why: the DSP thread needs the GIL for a few Python calls per block. In the GUI's process it
competes with Qt's thread (painting, events, timers), and on a busy machine the OS can preempt
the GUI thread while it holds the GIL, so the DSP thread waits a whole time slice: late blocks
(``python main.py bench gui`` compares the two set-ups; the README has the figures). In its own
process the engine's only Python neighbours are its monitor and the command loop, both idle
nearly all the time and raised to real-time priority 1, so neither can be preempted while
holding the GIL the DSP thread (priority 5) needs.

Real-time traffic never crosses a pipe: the engine's control ring (parameter, bypass and mix
records), MIDI ring and meter ring live in shared memory (``shm``) and the engine takes them at
construction, so a knob move is one lock-free push from the GUI process (through the same
``ControlWriter`` the engine uses) that the DSP thread pops at its next block. Structure
(presets, add/remove/move, devices, start/stop) and the once-a-second status go over a pipe
(``server`` runs in the engine process, ``client`` in the window's).
"""
from gui.remote.client import EngineProcessError, RemoteEngineHost

__all__ = ["EngineProcessError", "RemoteEngineHost"]
