"""A pass-through processor that shows the MIDI the chain hands it in its parameter values, so a
test can read them back from the engine process (imported there as a plugin)."""
from realtime.dsp.processor import Param, Processor
from realtime.dsp.processors import REGISTRY, register

ON_NOTE, ON_VELOCITY, OFF_NOTE, COUNT = range(4)


class MidiProbe(Processor):
    kind = "midiprobe"
    params = (Param("on_note", "Note on", 0, 127, 0, step=1), Param("on_velocity", "Velocity", 0, 127, 0, step=1),
              Param("off_note", "Note off", 0, 127, 0, step=1), Param("count", "Messages", 0, 1e9, 0, step=1))

    def process(self, block):
        pass

    def handle_midi(self, status, data1=0, data2=0, offset=0):
        if status & 0xF0 == 0x90 and data2 > 0:
            self.values[ON_NOTE], self.values[ON_VELOCITY] = data1, data2
        elif status & 0xF0 == 0x80 or status & 0xF0 == 0x90:
            self.values[OFF_NOTE] = data1
        self.values[COUNT] += 1


if "midiprobe" not in REGISTRY:
    register(MidiProbe)
