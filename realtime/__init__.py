"""Real-time core: GIL-free PortAudio callback, SPSC rings, processor chain, offline runner.

Never imports gui/ or torch.
"""
