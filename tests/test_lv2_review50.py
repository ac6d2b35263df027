"""LV2 hosting, review 50: a port whose range starts at 0 gets a log taper with a floor (``min``)
that the plugin is given as 0; the knob read the floor ("0.0200 Hz") where the plugin got 0."""
from realtime.dsp.processors.lv2 import _LogFromZero


def test_a_log_from_zero_port_at_its_floor_reads_what_the_plugin_gets():
    p = _LogFromZero("rate", "Rate", 0.02, 20.0, 0.02, unit="Hz", scale="log")
    assert p.format(p.min) == "0 Hz"
    assert p.format(p.from_unit(0.0)) == "0 Hz"
    assert p.format(0.5) == "0.5 Hz" and p.format(p.max) == "20 Hz"
