"""DDSP training side: the torch synth the decoders learn through is the runtime Numba synth;
the exported decoders stream frame by frame; the smoke training run exports a usable model."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from realtime.dsp.processors.synth import kernels as sk  # noqa: E402
from realtime.dsp.processors.synth.processor import MODEL_DIR  # noqa: E402


def test_torch_harmonic_synth_equals_numba_bank_one_frame_later():
    from models.ddsp.model import harmonic_synth

    sr, hop, T, K = 48000, 192, 30, 64
    rng = np.random.default_rng(1)
    f0 = np.concatenate([np.full(10, 220.0), np.linspace(220, 330, 10), 330 + 20 * rng.standard_normal(10)])
    harm = rng.uniform(0, 0.05, (T, K)) / np.arange(1, K + 1)
    harm[:, (np.arange(1, K + 1)[None, :] * f0[:, None] >= 12000)[0]] = 0.0
    ref = harmonic_synth(torch.tensor(f0[None], dtype=torch.float32), torch.tensor(harm[None], dtype=torch.float32),
                         hop, sr, phase0=torch.tensor([2 * hop * f0[0] / sr]))[0].numpy()
    out = np.zeros((T + 1) * hop)
    phase = np.zeros(1)
    a_from, a_to = np.zeros((1, K)), np.zeros((1, K))
    f_from, f_to = np.full(1, f0[0]), np.full(1, f0[0])
    scratch = [np.zeros(hop) for _ in range(4)]
    sk._harmonics(out, 0, hop, 0, hop, float(sr), 0, phase, a_from, a_to, f_from, f_to, *scratch)
    for j in range(T):  # frame j's values become the ramp target at boundary j
        a_from[0], a_to[0] = a_to[0], harm[j]
        f_from[0], f_to[0] = f_to[0], f0[j]
        s = (j + 1) * hop
        sk._harmonics(out, s, s + hop, 0, hop, float(sr), 0, phase, a_from, a_to, f_from, f_to, *scratch)
    # boundary j sits at (j + 1) * hop here, and the runtime ramps toward frame j after its
    # boundary where training ramps toward it before: two hops apart in this layout
    got = out[2 * hop:(T + 1) * hop]
    want = ref[:(T - 1) * hop]
    assert np.max(np.abs(got - want)) < 2e-4 * max(1.0, np.abs(want).max())


def test_noise_fir_table_equals_torch_filter_design():
    from models.ddsp.model import noise_irs

    m = np.random.default_rng(2).uniform(0, 1, 65)
    ref = noise_irs(torch.tensor(m[None, None], dtype=torch.float64))[0, 0].numpy()
    tab = sk.noise_table(65, 187.5, 128, 24000.0)
    np.testing.assert_allclose(m @ tab, ref, atol=1e-12)
    # at 48 kHz the filter has the same response at the same absolute frequencies
    h24 = np.abs(np.fft.rfft(m @ tab, 128))
    h48 = np.abs(np.fft.rfft(m @ sk.noise_table(65, 187.5, 256, 48000.0), 256))[:65]
    np.testing.assert_allclose(h48[:64], h24[:64], atol=0.02 * m.max())  # 12 kHz: Nyquist at 24 kHz


@pytest.mark.parametrize("instrument", ["violin", "flute", "trumpet"])
def test_exported_decoder_streams_frame_by_frame(instrument):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(MODEL_DIR / f"{instrument}.onnx"), providers=["CPUExecutionProvider"])
    h = int(sess.get_modelmeta().custom_metadata_map["hidden"])
    rng = np.random.default_rng(3)
    V, T = 3, 40
    f0 = rng.uniform(150, 900, (V, T)).astype(np.float32)
    ld = rng.uniform(-100, 0, (V, T)).astype(np.float32)
    st0 = np.zeros((1, V, h), np.float32)
    whole = sess.run(None, {"f0_hz": f0, "loudness_db": ld, "state": st0})
    st, parts = st0, []
    for t in range(T):
        hm, nz, st = sess.run(None, {"f0_hz": f0[:, t:t + 1], "loudness_db": ld[:, t:t + 1], "state": st})
        parts.append(hm)
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole[0], atol=1e-5)
    assert whole[0].shape == (V, T, 64) and whole[1].shape == (V, T, 65)


def test_smoke_training_exports_a_model_the_synth_plays(tmp_path):
    from models.ddsp import train
    from realtime.dsp.processors.synth.processor import Synth

    assert train.main(["--instrument", "flute", "--smoke", "--export", str(tmp_path / "flute.onnx"),
                       "--ckpt", str(tmp_path / "ck")]) == 0
    assert (tmp_path / "ck" / "best.pt").is_file()  # the run's checkpoints stay out of the repository
    s = Synth(model_dir=tmp_path, instrument="flute")
    s.prepare(48000, 256, 1)
    s.handle_midi(0x90, 72, 100, 0)
    buf = np.zeros((256, 1), np.float32)
    peak = 0.0
    for _ in range(40):
        buf.fill(0)
        s.process(buf)
        peak = max(peak, float(np.abs(buf).max()))
    assert peak > 0 and np.isfinite(buf).all()
