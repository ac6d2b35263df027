"""The PyQt6 knob panel (see README, "The knob panel")."""

# The panel runs the heavy neural chains, so its DSP thread (Python) gets one block more of output
# pre-fill as its time budget than the headless engine's 2: late blocks of ours vanish for a few
# milliseconds of round trip (README, "The knob panel", has the `bench gui` runs behind this).
PANEL_PREFILL_BLOCKS = 3
