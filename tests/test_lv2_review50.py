"""LV2 hosting, review 50: a port whose range starts at 0 gets a log taper with a floor (``min``)
that the plugin is given as 0; the knob read the floor ("0.0200 Hz") where the plugin got 0."""
from realtime.dsp.processors.lv2 import _LogFromZero


def test_a_log_from_zero_port_at_its_floor_reads_what_the_plugin_gets():
    p = _LogFromZero("rate", "Rate", 0.02, 20.0, 0.02, unit="Hz", scale="log")
    assert p.format(p.min) == "0 Hz"
    assert p.format(p.from_unit(0.0)) == "0 Hz"
    assert p.format(0.5) == "0.5 Hz" and p.format(p.max) == "20 Hz"


def test_an_output_port_of_a_range_too_wide_to_span_reads_as_a_number_and_a_bar_of_it_paints(qtbot):
    """An output port declared -1e308..1e308: its span overflows to inf, and the bar's tick step
    raised OverflowError in paintEvent (an exception there ends a PyQt6 application)."""
    from realtime.dsp.processor import Readout
    from realtime.dsp.processors.lv2 import _readout_of
    from realtime.io.lv2_scan import PortInfo

    wide = PortInfo(3, "freq", "Frequency", "control", "out", minimum=-1e308, maximum=1e308, unit="Hz")
    assert _readout_of(wide).kind == "number"
    from gui.readouts import ReadoutBar

    for lo, hi in ((-1e308, 1e308), (-1.7976931348623157e308, 1.7976931348623157e308)):
        bar = ReadoutBar(Readout("f", "Frequency", "Hz", lo, hi, kind="level"))
        qtbot.addWidget(bar)
        bar.resize(60, 200)
        bar.set_value(5.0)
        assert not bar.grab().isNull()
        assert bar._ticks() == [lo]
