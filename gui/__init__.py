"""The PyQt6 knob panel (see README, "The knob panel")."""

# The panel's engine runs the heavy neural chains; its DSP thread (Python) gets 3 blocks of
# output pre-fill as its time budget instead of the headless engine's 2. Measured with
# `python main.py bench gui --seconds 600` (full chain, DSP load 31-40 %, this 2-core VM):
# pre-fill 2: 14 and 33 late blocks (10 and 26 ours); pre-fill 3, six runs: 0 to 5 (0 or 1 ours
# each), for 2.7 ms more round trip at 128 frames. Pre-fill 4 did no better (5, all ours): see README.
# Once the hypervisor's late blocks were split off (2026-11-30): pre-fill 3 gave 0 of ours,
# pre-fill 2 gave 2 (one a 5.7 ms block mostly on the CPU).
PANEL_PREFILL_BLOCKS = 3
