"""The PyQt6 knob panel (see README, "The knob panel")."""

# The panel runs the heavy neural chains, so its engine gets one block more of output pre-fill than
# the headless one (realtime/engine/config.py; README, "The knob panel", has the runs behind it).
from realtime.engine.config import PANEL_PREFILL_BLOCKS  # noqa: F401
