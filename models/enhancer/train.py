"""Train the speech enhancer and export it to ONNX.

    python -m models.enhancer.data                     # build data/enhancer (train does it if missing)
    python -m models.enhancer.train                    # full run (MODEL_CARD.md: how the committed one was made)
    python -m models.enhancer.train --resume           # continue from checkpoints/enhancer/last.pt
    python -m models.enhancer.train --force            # start afresh over it (else a fresh run is refused there)
    python -m models.enhancer.train --smoke            # CI: synthetic data, few steps, export

``main(argv)`` is the entry point (``python main.py train enhancer [--smoke]``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from models.device import DEVICE_HELP, pick_device
from realtime.argtypes import OneLineParser, non_negative_int, positive_float, positive_int
from realtime.dsp.erb import MIN_BAND_HZ

MIN_SECONDS = 0.1  # shortest --seconds: the loss's 1024-point STFT needs a few of its frames
SHIPPED_WIN = 480  # the analysis window of weights that name none (models/enhancer/model.py WIN)
DEFAULT_HIDDEN = 128  # encoder width of a fresh model (the shipped weights since stage 15: 256)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT / "data" / "enhancer"
DEFAULT_CKPT = ROOT / "checkpoints" / "enhancer"
DEFAULT_EXPORT = Path(__file__).resolve().parent / "enhancer.onnx"


def parse(argv):
    ap = OneLineParser(prog="train enhancer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--ckpt", type=Path, default=None, help="checkpoint folder")
    ap.add_argument("--export", type=Path, default=None,
                    help="ONNX output path (default: enhancer.onnx in --ckpt when given, else the shipped model)")
    ap.add_argument("--steps", type=positive_int, default=None, help="training steps (default 6000; --smoke: 12)")
    ap.add_argument("--max-minutes", type=positive_float, default=90.0,
                    help="stop (and export) after this much training (the data build and setup not counted); "
                         "the LR schedule then ends early too")
    ap.add_argument("--batch", type=positive_int, default=16)
    ap.add_argument("--seconds", type=positive_float, default=1.0,
                    help="training segment length (1 s: ~2.5x the updates per minute of 2 s, same audio/s)")
    ap.add_argument("--gap-max", type=positive_float, default=0.6,
                    help="longest pause (s) between the utterances of a mixture (the shortest is 0.05 s): "
                         "short game lines leave fewer pauses than real speech, and pauses are where "
                         "residual noise is heard")
    ap.add_argument("--clean-floor", action=argparse.BooleanOptionalAction, default=False,
                    help="targets without the voice recordings' own noise floor (data.split_floor; the input "
                         "keeps it), so that hiss in a recording counts as noise too")
    ap.add_argument("--teacher-targets", action="store_true",
                    help="targets: the voices through the shipped enhancer (python -m models.enhancer.targets); "
                         "the input keeps the recordings as they are, so the network learns to remove their room "
                         "tone and hiss too (implies --clean-floor)")
    ap.add_argument("--dc-free", action=argparse.BooleanOptionalAction, default=True,
                    help="voices without their recordings' DC offsets, in input and target (since the thirteenth "
                         "session; the runtime's input DC blocker takes an offset out before the network sees it)")
    ap.add_argument("--lr", type=positive_float, default=2e-3)
    ap.add_argument("--p-level-step", type=float, default=0.3,
                    help="share of mixtures whose noise steps up or down in level mid-segment")
    ap.add_argument("--p-onset", type=float, default=0.15,
                    help="share of mixtures that start out of digital silence at a random frame phase")
    ap.add_argument("--p-midword", type=float, default=0.0,
                    help="share of segments that start in the middle of an utterance (no lead of noise): the "
                         "network starts from its zero state on a voice already under way, as a file cut "
                         "mid-word does")
    ap.add_argument("--snr-max", type=float, default=30.0,
                    help="mixtures draw their SNR from -5 dB up to this (high SNRs teach the model to leave "
                         "near-clean speech at its level)")
    ap.add_argument("--p-clean", type=float, default=0.05,
                    help="share of mixtures without noise (clean speech must pass unchanged)")
    ap.add_argument("--init", type=Path, default=None,
                    help="fine-tune: start from this checkpoint's weights (fresh optimiser and schedule)")
    ap.add_argument("--init-onnx", type=Path, default=None,
                    help="fine-tune: start from an exported ONNX model's weights (e.g. models/enhancer/"
                         "enhancer.onnx when its checkpoints are lost; same --hidden/--hidden-df)")
    ap.add_argument("--hidden", type=positive_int, default=None,
                    help="encoder GRU width; --init from narrower weights widens them, starting as the same "
                         f"function (model.widen). Default: the width of the weights it starts from, else {DEFAULT_HIDDEN}")
    ap.add_argument("--hidden-df", type=positive_int, default=96)
    ap.add_argument("--win", type=positive_int, default=None,
                    help="analysis window (samples, a multiple of 480): above 480 an asymmetric pair whose synthesis "
                         "spans the last 480 samples (finer bins, the same 10 ms latency). Default: the --init "
                         "checkpoint's (or export's), else 480; --resume and --export-only keep the checkpoint's")
    ap.add_argument("--min-band-hz", type=positive_float, default=None,
                    help="the narrowest of the 32 ERB bands (whole bins: 100 is one bin at 480); --init weights of "
                         "other bands start from the bands covering the same Hz. Default as --win's, else 200")
    ap.add_argument("--seed", type=non_negative_int, default=0)
    ap.add_argument("--workers", type=non_negative_int, default=1, help="data-mixing processes (0: in the trainer's)")
    ap.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    ap.add_argument("--device", default="auto", help=DEVICE_HELP)
    ap.add_argument("--log-every", type=positive_int, default=25)
    ap.add_argument("--val-every", type=positive_int, default=250)
    ap.add_argument("--ckpt-every", type=positive_int, default=100)
    ap.add_argument("--keep-every", type=non_negative_int, default=0,
                    help="also keep the weights every N steps as stepN.pt (for selection elsewhere; 0: never)")
    ap.add_argument("--asym", type=float, default=0.0,
                    help="weight of an extra penalty on output magnitude above the clean one (residual noise; "
                         "PESQ and DNSMOS-BAK reward removing it more than SI-SDR does)")
    ap.add_argument("--erb-weight", type=float, default=1.0,
                    help="weight of a compressed-magnitude loss on the 32 ERB bands' mean powers, each band counting "
                         "alike (the per-bin terms give the 10 bins under 1 kHz 4 %% of the weight, the ERB scale 16 %%; "
                         "PESQ, DNSMOS and RNNoise's own loss weigh frequencies on such a perceptual scale; since stage 14; "
                         "0 = the loss of stages 1-13)")
    ap.add_argument("--pause-weight", type=float, default=0.0,
                    help="loss per dB that noise-dominated frames (speech 20 dB under the mixture) come out above "
                         "max(speech, input - 30 dB) + 3 dB: residual noise in pauses, which PESQ and DNSMOS hear")
    ap.add_argument("--df-gate", action=argparse.BooleanOptionalAction, default=True,
                    help="the band gains scale the deep filter's bins too (model.py; the shipped model since stage "
                         "10); --resume and --init-onnx take the checkpoint's / export's setting")
    ap.add_argument("--deep-filter", action=argparse.BooleanOptionalAction, default=False,
                    help="add the deep-filter branch for the low bins (the graph of stages 1-10; since stage 11 "
                         "the band gains alone are shipped: as good or better without it, and clean voices keep "
                         "their level). --init from a checkpoint with it into the default graph drops its "
                         "weights; --resume takes the checkpoint's setting")
    ap.add_argument("--pitch-features", action=argparse.BooleanOptionalAction, default=True,
                    help="feed the network each ERB band's pitch correlation (realtime/dsp/pitch.py, computed by the "
                         "data workers; the graph gets a 'pcorr' input; the shipped model since stage 13). --init from weights without "
                         "them starts with zero weights for them (the same function); --resume takes the checkpoint's "
                         "setting")
    ap.add_argument("--features-on", choices=("auto", "workers", "trainer"), default="auto",
                    help="where the pitch features of a batch are computed: in the data workers (Numba, per example) "
                         "or by the trainer on its device (models/enhancer/pitch_batch.py, the same values; the whole "
                         "batch at once). auto: the trainer on a GPU, where the workers were the bottleneck")
    ap.add_argument("--select-by", choices=("sisdr", "pesq", "pesq+dnsmos"), default="sisdr",
                    help="checkpoint selection score on the held-out selection mixtures (pesq+dnsmos: PESQ-WB + "
                         "DNSMOS OVRL, the two the benchmark's peers lead on; needs the eval extra)")
    ap.add_argument("--clean-penalty", type=float, default=0.2,
                    help="selection score lost per dB that clean voices (held-out ones and espeak-ng sentences, "
                         "with digital pauses) change level beyond 0.5 dB: a checkpoint that suppresses an unknown "
                         "voice is never selected")
    ap.add_argument("--learn-start", action=argparse.BooleanOptionalAction, default=None,
                    help="train the encoder's state at a stream's start (default: when the weights a run "
                         "starts from have one); exported in the metadata")
    ap.add_argument("--train-only", choices=("all", "start"), default=None,
                    help="start: train only the start state (--learn-start), every weight frozen "
                         "(default all; --resume: the run's own)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--force", action="store_true",
                    help="start afresh in a checkpoint folder that holds an earlier run (its weights are replaced)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny synthetic run + export (CI); without --ckpt into checkpoints/enhancer-smoke, "
                         "replacing the last smoke run there")
    ap.add_argument("--export-only", action="store_true",
                    help="export --init's weights (else the checkpoint folder's best.pt, or last.pt) and exit")
    ap.add_argument("--average", type=Path, nargs="+", default=None, metavar="FILE",
                    help="with --export-only: export the mean of these checkpoints' weights (e.g. the step*.pt "
                         "that --keep-every kept along one fine-tune; one graph)")
    a = ap.parse_args(argv)
    if a.select_by == "pesq+dnsmos" and importlib.util.find_spec("speechmos") is None:
        raise SystemExit("--select-by pesq+dnsmos needs speechmos: .venv/bin/pip install -e '.[eval]'")
    if a.average and not a.export_only:  # before anything is built: a usage error costs nothing
        raise SystemExit("--average goes with --export-only")
    if a.seconds < MIN_SECONDS:
        raise SystemExit(f"--seconds {a.seconds:g}: a training segment is at least {MIN_SECONDS:g} s")
    if a.smoke:
        a.steps = min(a.steps or 12, 12)
        a.batch, a.seconds, a.workers = 4, 1.0, 0
        a.val_every, a.ckpt_every, a.log_every = 6, 6, 2
        if a.ckpt is None:  # its own folder: CI's smoke run replaces the previous one there
            a.ckpt, a.force = ROOT / "checkpoints" / "enhancer-smoke", True
        a.export = a.export or a.ckpt / "enhancer.onnx"
    # a run in a folder of its own exports there (as the de-limiter's does): a fine-tune must not
    # replace the shipped model when it stops; the default run makes the shipped model
    a.export = a.export or (a.ckpt / "enhancer.onnx" if a.ckpt is not None else DEFAULT_EXPORT)
    a.ckpt = a.ckpt or DEFAULT_CKPT
    a.steps = a.steps or 6000
    return a


# ------------------------------------------------------------------------------------------
def framing(a, ck: dict | None, keep: bool = False) -> tuple[int, float]:
    """(win, min_band_hz) of a run from checkpoint ``ck`` (the shipped 480 / 200 where it has none):
    the flags where given, unless ``keep`` (--resume, --export-only: the weights' own framing, and a
    flag that differs is an error)."""
    own = int((ck or {}).get("win", SHIPPED_WIN)), float((ck or {}).get("min_band_hz", MIN_BAND_HZ))
    if keep and a.win not in (None, own[0]) or keep and a.min_band_hz not in (None, own[1]):
        raise SystemExit(f"the weights were trained with a {own[0]}-sample window and {own[1]:g} Hz bands: "
                         "leave out --win / --min-band-hz")
    return (own[0] if a.win is None else a.win, own[1] if a.min_band_hz is None else a.min_band_hz)


def _onnx_facts(path: Path) -> dict | None:
    """An --init-onnx export's window and bands (its metadata, for ``framing``) and encoder width
    (its h_enc state's last axis, as "hidden"); None when it cannot be read (the load that follows
    says why)."""
    try:
        import onnx

        m = onnx.load(str(path))
        meta = {p.key: p.value for p in m.metadata_props}
        facts = {k: float(meta[k]) for k in ("win", "min_band_hz") if k in meta} | {"learn_start": "h_enc_start" in meta}
        for i in m.graph.input:
            if i.name == "h_enc" and i.type.tensor_type.shape.dim[2].dim_value:
                facts["hidden"] = int(i.type.tensor_type.shape.dim[2].dim_value)
        return facts
    except Exception:
        return None


def no_data_message(a) -> str:
    """What to run for training data in ``a.data`` (and the teacher targets that --teacher-targets needs)."""
    from models.enhancer.targets import teacher_path

    msg = (f"no training data in {a.data}: build it with python -m models.enhancer.data --out {a.data} "
           f"(or unpack a pack there: python -m models.enhancer.pack --unpack PACK --out {a.data})")
    if a.teacher_targets and not teacher_path(a.data / "train_speech").exists():
        msg += f", then python -m models.enhancer.targets --data {a.data}"
    return msg


def make_pools(a):
    from models.enhancer.data import Pool, is_built, synthetic_pools

    if a.smoke:
        return synthetic_pools(seed=a.seed)
    if not is_built(a.data):
        raise SystemExit(no_data_message(a))
    return Pool.load(a.data / "train_speech", teacher=a.teacher_targets), Pool.load(a.data / "train_noise")


def _mix_iter(self):
    import torch

    from models.enhancer.data import Mixer

    torch.set_num_threads(1)
    info = torch.utils.data.get_worker_info()
    wid = info.id if info else 0
    sp, no = make_pools(self.a)
    mixer = Mixer(sp, no, seconds=self.a.seconds, snr=(-5.0, self.a.snr_max), p_level_step=self.a.p_level_step,
                  p_onset=self.a.p_onset, p_clean=self.a.p_clean, gap=(0.05, self.a.gap_max),
                  clean_floor=self.a.clean_floor or self.a.teacher_targets, dc_free=self.a.dc_free,
                  p_midword=self.a.p_midword)
    rng = np.random.default_rng([self.a.seed, wid, self.start])
    while True:
        noisy, clean = mixer.draw(rng)
        # the pitch features in the worker, beside the mixing: the trainer's core does only the network
        feats = (pitch_features_of(noisy[None], self.a.win, self.a.min_band_hz)[:, 0] if self.a.worker_features
                 else np.zeros(0, np.float32))
        yield torch.from_numpy(noisy), torch.from_numpy(clean), torch.from_numpy(feats)


def pitch_features_of(x: np.ndarray, win: int, min_band_hz: float = MIN_BAND_HZ) -> np.ndarray:
    """Band pitch correlations [T, B, NB_ERB] of signals x [B, L] (L cut to whole hops) for a
    ``win``-sample analysis window and its bands, as the processor computes them for the same frames."""
    from models.enhancer.model import HOP, SR, windows
    from realtime.dsp.pitch import pitch_features

    return pitch_features(x[:, : x.shape[1] // HOP * HOP], SR, windows(win)[0], HOP, min_band_hz)


def mix_stream(a, start_step: int):
    """Infinite IterableDataset of (noisy, clean) segments; one RNG stream per worker."""
    import torch

    class MixStream(torch.utils.data.IterableDataset):
        def __init__(self):
            super().__init__()
            self.a, self.start = a, start_step

        __iter__ = _mix_iter

    return MixStream()


def val_batch(a, n=None, seconds=4.0):
    """A fixed slice of the held-out validation mixtures (or synthetic ones in smoke mode)."""
    import soundfile as sf

    from models.enhancer.data import SELECT_MIXTURES, SELECTION_CLIPS, Mixer, synthetic_pools
    from realtime.dsp.processors.neural.enhancer import dc_blocked

    L = int(seconds * 48000) // 240 * 240
    # checkpoint selection on the held-out *packages* (select/); older data folders only have val/
    has_select = (a.data / "select" / "meta.json").is_file()  # written last (``write_mixtures``)
    if not has_select and (a.data / "select" / "noisy").exists() and not a.smoke:
        raise SystemExit(f"{a.data / 'select'}: not whole (a build stopped while writing it); write it again with "
                         f"python -m models.enhancer.data --bench-only --out {a.data}")
    sel = a.data / "select" if has_select else a.data / "val"
    n = (SELECT_MIXTURES if has_select else SELECTION_CLIPS) if n is None else n
    if a.smoke or not (sel / "noisy").exists():
        sp, no = synthetic_pools(seed=a.seed + 99, n_speech=6, n_noise=3)
        m = Mixer(sp, no, seconds=L / 48000, p_clean=0, p_speechless=0)
        rng = np.random.default_rng(7)
        pairs = [m.draw(rng) for _ in range(4)]
    else:
        files = sorted((sel / "noisy").glob("*.wav"))[:n]
        pairs = [(sf.read(f, dtype="float32")[0][:L], sf.read(sel / "clean" / f.name, dtype="float32")[0][:L])
                 for f in files]
    # the network gets what the runtime gives it: the input after the processor's DC blocker
    x = np.stack([dc_blocked(p[0]) for p in pairs])
    s = np.stack([p[1] for p in pairs])
    return x, s


ESPEAK_SENTENCES = (("en-gb", "The north wind and the sun were disputing which was the stronger."),
                    ("de", "Der Nordwind und die Sonne stritten sich, wer von ihnen der Stärkere wäre."),
                    ("fr", "La bise et le soleil se disputaient, chacun assurant qu'il était le plus fort."),
                    ("es", "El viento norte y el sol porfiaban sobre cuál de ellos era el más fuerte."))


def clean_batch(s: np.ndarray, seconds=4.0) -> list[np.ndarray]:
    """Clean voices for the selection's level check: the first selection clips' references and
    espeak-ng sentences (a voice unlike any recording; other sentences than the tests'), each with
    digital pauses as produced voice files have them (exact zeros between words)."""
    import shutil
    import subprocess
    import tempfile

    import soundfile as sf
    import soxr

    voices = list(s[:6])
    exe = shutil.which("espeak-ng")
    if exe:
        with tempfile.TemporaryDirectory() as d:
            for i, (v, text) in enumerate(ESPEAK_SENTENCES):
                w = f"{d}/{i}.wav"
                if subprocess.run([exe, "-v", v, "-s", "150", "-w", w, text], capture_output=True).returncode == 0:
                    x, sr = sf.read(w, dtype="float32")
                    voices.append(0.3 * soxr.resample(x, sr, 48000) / max(1e-6, float(np.max(np.abs(x)))))
    out = []
    L = int(seconds * 48000) // 240 * 240
    gap = np.zeros(int(0.25 * 48000), np.float32)
    for v in voices:
        parts = np.array_split(v[:L], 4)
        x = np.concatenate([p for part in parts for p in (part, gap)])
        x[np.abs(x) < 1e-3 * np.max(np.abs(x))] = 0.0
        out.append(x[: len(x) // 240 * 240].astype(np.float32))
    return out


def clean_level_change(run, clips: list[np.ndarray], device="cpu") -> float:
    """Mean level change (dB) that ``run`` (one clip [1, L] -> output) gives clean voices."""
    import torch

    from models.enhancer.model import HOP

    d = []
    for c in clips:
        y = run(torch.from_numpy(c)[None].to(device))[0, HOP:].cpu().numpy()
        d.append(10 * np.log10((np.mean(y.astype(np.float64) ** 2) + 1e-20) / (np.mean(c[:-HOP] ** 2) + 1e-20)))
    return float(np.mean(d))


# ------------------------------------------------------------------------------------------
def mean_pesq(clean: np.ndarray, est: np.ndarray) -> float:
    """Mean PESQ-WB over a batch of 48 kHz clips, resampled as the benchmark does; clips PESQ
    rejects are left out."""
    import soxr

    from models.enhancer.metrics import pesq_wb

    vals = [pesq_wb(soxr.resample(c, 48000, 16000, quality="HQ"), soxr.resample(e, 48000, 16000, quality="HQ"))
            for c, e in zip(clean, est)]
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


def mean_dnsmos(est: np.ndarray) -> float:
    """Mean DNSMOS OVRL (P.835) over a batch of 48 kHz clips, at 16 kHz as the benchmark scores it."""
    import soxr
    from speechmos import dnsmos

    return float(np.mean([dnsmos.run(np.clip(soxr.resample(e, 48000, 16000, quality="HQ"), -1, 1).astype(np.float32),
                                     sr=16000)["ovrl_mos"] for e in est]))


def si_sdr(y, s, eps=1e-8):
    import torch

    a = (y * s).sum(-1, keepdim=True) / ((s * s).sum(-1, keepdim=True) + eps)
    t = a * s
    return 10 * torch.log10((t * t).sum(-1) / (((y - t) ** 2).sum(-1) + eps) + eps)


def pause_excess_db(Y, S, X):
    """Mean dB by which noise-dominated frames (clean 20 dB under the noisy frame) come out above
    max(clean, noisy - 30 dB) + 3 dB; spectra [T, B, F, 2] on one framing. 0 when no frame is."""
    import torch

    ey, es, ex = (Z.pow(2).sum(dim=(-1, -2)) for Z in (Y, S, X))  # frame energies [T, B]
    noise_only = (es < 0.01 * ex) & (ex > 1e-8)
    floor = torch.maximum(es, 1e-3 * ex)
    excess = torch.relu(10 * torch.log10((ey + 1e-10) / (floor + 1e-10)) - 3.0)
    return (excess * noise_only).sum() / noise_only.sum().clamp(min=1)


class Loss:
    def __init__(self, nfreq: int, asym: float = 0.0, pause_weight: float = 0.0, erb_weight: float = 0.0,
                 device="cpu", min_band_hz: float = MIN_BAND_HZ):
        import torch

        from realtime.dsp.erb import NB_ERB, SR, erb_matrices

        self.erb_weight = erb_weight
        # the band term pools the network's own bands (``--min-band-hz``)
        self.erb_pool = torch.from_numpy(erb_matrices(NB_ERB, nfreq, SR, min_band_hz)[0]).to(device)
        self.res = [(n, torch.hann_window(n, device=device)) for n in (256, 1024)]
        self.c = 0.3
        self.asym = asym
        self.pause_weight = pause_weight

    def _spec_terms(self, Y, S):
        import torch.nn.functional as F

        mY = (Y.pow(2).sum(-1) + 1e-12).sqrt()
        mS = (S.pow(2).sum(-1) + 1e-12).sqrt()
        cY = Y * mY.pow(self.c - 1).unsqueeze(-1)
        cS = S * mS.pow(self.c - 1).unsqueeze(-1)
        d = mY.pow(self.c) - mS.pow(self.c)
        out = d.pow(2).mean() + 0.5 * F.mse_loss(cY, cS)
        if self.asym:  # residual noise costs more than the same error below the clean magnitude
            out = out + self.asym * d.clamp(min=0).pow(2).mean()
        return out

    def _band_term(self, Y, S):
        """MSE of the ERB bands' compressed magnitudes (mean power per band ^ (c / 2))."""
        eY = (Y.pow(2).sum(-1) @ self.erb_pool + 1e-12).pow(self.c / 2)
        eS = (S.pow(2).sum(-1) @ self.erb_pool + 1e-12).pow(self.c / 2)
        return (eY - eS).pow(2).mean()

    def __call__(self, Y, S, y, s, X=None):
        import torch

        l_spec = self._spec_terms(Y, S)
        l_mr = 0.0
        for n, w in self.res:
            Yn = torch.view_as_real(torch.stft(y, n, n // 2, window=w, return_complex=True))
            Sn = torch.view_as_real(torch.stft(s, n, n // 2, window=w, return_complex=True))
            l_mr = l_mr + self._spec_terms(Yn, Sn)
        active = (s.pow(2).mean(-1) > 1e-9)
        l_sdr = -(si_sdr(y, s) * active).sum() / active.sum().clamp(min=1)
        total = 10 * l_spec + 10 * l_mr / len(self.res) + 0.05 * l_sdr
        parts = {"spec": float(l_spec.detach()), "mr": float(l_mr.detach()) / len(self.res),
                 "sisdr": -float(l_sdr.detach())}
        if self.erb_weight:
            l_erb = self._band_term(Y, S)
            total = total + 10 * self.erb_weight * l_erb
            parts["erb"] = float(l_erb.detach())
        if self.pause_weight and X is not None:
            l_pause = pause_excess_db(Y, S, X)
            total = total + self.pause_weight * l_pause
            parts["pause_db"] = float(l_pause.detach())
        return total, parts


# ------------------------------------------------------------------------------------------
def load_run(path: Path) -> dict:
    """A run checkpoint for --resume (``save``'s: weights, optimiser state, step), or one line saying
    what the file is not."""
    import torch

    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch's unpickling and zip errors: an empty, cut or foreign file
        raise SystemExit(f"{path}: not an enhancer run checkpoint ({type(e).__name__})") from None
    weights = ck.get("model") if isinstance(ck, dict) else None
    if not isinstance(weights, dict) or "gain.weight" not in weights:  # every enhancer has its gain head
        raise SystemExit(f"{path}: not an enhancer run checkpoint (no enhancer weights in it)")
    if "opt" not in ck or "step" not in ck:
        raise SystemExit(f"{path}: not an enhancer run checkpoint (weights only, no optimiser state: "
                         "--init starts a run from them)")
    return ck


def main(argv=None) -> int:
    a = parse(list(argv) if argv is not None else sys.argv[1:])
    from models.enhancer.data import is_built
    from models.run_folder import check_run_folder, check_writable, claim_run_folder, save_torch

    # refusals first, before anything is written or torch is imported: an unwritable --export was
    # found only after the training, a --ckpt that is a file said "File exists"
    if not a.export_only:
        check_run_folder(a.ckpt, a.resume, a.force)
        check_writable(a.ckpt / "last.pt")
    check_writable(a.export)
    build_data = not a.smoke and not a.export_only and not is_built(a.data)
    if build_data and a.data.resolve() != DEFAULT_DATA.resolve():  # a mistyped --data: no recipe run (apt-get) there
        raise SystemExit(no_data_message(a))
    import torch

    from models.enhancer.model import (
        HOP,
        SR,
        Enhancer,
        average_weights,
        count_params,
        export_onnx,
        fit_weights,
        istft,
        stft,
        windows,
    )

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    device = pick_device(a.device)
    # an export trains nothing: it prints, and leaves the checkpoint folder (by default the
    # repository's checkpoints/enhancer) as it was. A run makes it with its first line: a run
    # refused before that (an --init that is no checkpoint) leaves no folder behind
    logf = []
    t_start = time.time()

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')} {time.time() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        if a.export_only:
            return
        if not logf:
            claim_run_folder(a.ckpt)
            logf.append(open(a.ckpt / "train.log", "a"))
        logf[0].write(line + "\n")
        logf[0].flush()

    if build_data:
        from models.enhancer.data import build

        log(f"no training data in {a.data}: building it (recipe models/enhancer/data.py)")
        build(a.data)
    if a.export_only:
        srcs = a.average or [a.init or (a.ckpt / "best.pt" if (a.ckpt / "best.pt").exists() else a.ckpt / "last.pt")]
        cks = []
        for src in srcs:
            if not src.is_file():
                raise SystemExit(f"{src}: no such file")
            try:
                cks.append(torch.load(src, map_location="cpu", weights_only=False))
            except Exception as e:  # torch's unpickling errors, a file that is no checkpoint
                raise SystemExit(f"{src}: not an enhancer checkpoint ({type(e).__name__})")
            if not isinstance(cks[-1], dict) or "model" not in cks[-1]:
                raise SystemExit(f"{src}: not an enhancer checkpoint (no weights in it)")
        ck = cks[0]
        if len({framing(a, c, keep=True) for c in cks}) > 1:  # same shapes, other bands: no mean of them
            raise SystemExit("--average: the checkpoints are of different windows or bands")
        try:
            state = average_weights([c["model"] for c in cks])
        except ValueError as e:
            raise SystemExit(f"--average: {e}")
        try:
            model = Enhancer(ck.get("hidden", a.hidden or DEFAULT_HIDDEN), ck.get("hidden_df", a.hidden_df),
                             ck.get("df_gate", False), ck.get("deep_filter", True), ck.get("pitch_features", False),
                             *framing(a, ck, keep=True), learn_start=ck.get("learn_start", False))
            model.load_state_dict(fit_weights(state, model))
        except Exception as e:  # another model's weights (a de-limiter checkpoint): names or shapes differ
            raise SystemExit(f"{srcs[0]}: not an enhancer checkpoint ({type(e).__name__})") from None
        a.export.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, a.export)
        if a.average:
            log(f"exported the mean of {len(cks)} checkpoints (steps {[c.get('step') for c in cks]}) -> {a.export}")
        else:
            log(f"exported {srcs[0]} (step {ck.get('step')}) -> {a.export}")
        return 0
    last = a.ckpt / "last.pt"
    resumed = load_run(last) if a.resume else None  # check_run_folder: it is there
    if resumed is not None:  # the graph the weights were trained in
        a.df_gate, a.deep_filter = resumed.get("df_gate", False), resumed.get("deep_filter", True)
        a.pitch_features = resumed.get("pitch_features", False)
        a.teacher_targets = a.teacher_targets or resumed.get("teacher_targets", False)  # the run's targets
        a.win, a.min_band_hz = framing(a, resumed, keep=True)
        # the parameters its optimiser state belongs to: the run's own start state and trained set
        for flag, default in (("learn_start", False), ("train_only", "all")):
            own, given = resumed.get(flag), getattr(a, flag)
            if own is None:  # a run saved before the flag: as told, else the default
                setattr(a, flag, default if given is None else given)
                continue
            if given is not None and given != own:
                said = (f"--{'' if own else 'no-'}learn-start" if flag == "learn_start" else f"--train-only {own}")
                raise SystemExit(f"{last}: the run was trained with {said}; resume it so, or start a new run (--init)")
            setattr(a, flag, own)
    init_ck = None
    if resumed is None and a.init is not None:
        try:
            init_ck = torch.load(a.init, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise SystemExit(f"{a.init}: no such file")
        except Exception as e:  # torch's unpickling errors, a file that is no checkpoint
            raise SystemExit(f"{a.init}: not an enhancer checkpoint ({type(e).__name__})")
    # the weights a run starts from: a resumed run's, an --init checkpoint's or an --init-onnx export's facts
    start = resumed if resumed is not None else init_ck if a.init is not None else (
        _onnx_facts(a.init_onnx) if a.init_onnx is not None else None)
    start = start if isinstance(start, dict) else None
    if resumed is None:  # fresh or fine-tuned: the flags, else the weights' own
        a.win, a.min_band_hz = framing(a, start)
    if a.hidden is None:  # the width of the weights it starts from (a 256-unit checkpoint needs no flag)
        a.hidden = int(start.get("hidden", DEFAULT_HIDDEN)) if start is not None else DEFAULT_HIDDEN
    a.train_only = a.train_only or "all"
    if a.learn_start is None:  # the weights' own: a learnt start is kept, never dropped silently
        a.learn_start = bool(start is not None and start.get("learn_start", False))
    if a.train_only == "start" and not a.learn_start:
        raise SystemExit("--train-only start: needs --learn-start")
    try:
        model = Enhancer(a.hidden, a.hidden_df, a.df_gate, a.deep_filter, a.pitch_features, a.win, a.min_band_hz,
                         a.learn_start)
    except ValueError as e:
        raise SystemExit(f"--win: {e}")  # on the CPU until loaded
    step = 0
    best = -1e9
    if resumed is not None:
        ck = resumed
        try:
            model.load_state_dict(fit_weights(ck["model"], model))
        except Exception as e:  # another model's run (a de-limiter's last.pt): names or shapes differ
            raise SystemExit(f"{last}: not an enhancer run checkpoint ({type(e).__name__})") from None
        step, best = ck["step"], ck.get("best", best)
        log(f"resumed from {last} at step {step}")
    elif a.init is not None:
        try:
            ck = init_ck
            if a.deep_filter and not ck.get("deep_filter", True):
                raise SystemExit(f"{a.init}: has no deep filter to fine-tune (leave out --deep-filter)")
            if ck.get("pitch_features", False) and not a.pitch_features:
                raise SystemExit(f"{a.init}: was trained with pitch features (add --pitch-features)")
            if ck.get("hidden", a.hidden) > a.hidden:
                raise SystemExit(f"{a.init}: has {ck['hidden']} encoder units; --hidden can widen it, not narrow it")
            model.load_state_dict(fit_weights(ck["model"], model))
        except Exception as e:  # no checkpoint's dict, another model's weights
            raise SystemExit(f"{a.init}: not an enhancer checkpoint ({type(e).__name__})")
        log(f"fine-tuning from {a.init} (its step {ck['step']})")
    elif a.init_onnx is not None:
        from models.enhancer.onnx_weights import load_onnx_weights

        try:
            load_onnx_weights(model, a.init_onnx)
        except FileNotFoundError:
            raise SystemExit(f"{a.init_onnx}: no such file")
        except Exception as e:  # onnx's decode errors; ValueError: another model's graph or sizes
            raise SystemExit(f"{a.init_onnx}: not an enhancer export ({type(e).__name__}: {e})".splitlines()[0])
        a.df_gate = model.df_gate
        log(f"fine-tuning from the weights of {a.init_onnx}")
    model.to(device)
    if a.train_only == "start":  # the weights stay as they are; the start state is all that learns
        for name, prm in model.named_parameters():
            prm.requires_grad_(name == "h_start")
    opt = torch.optim.AdamW([prm for prm in model.parameters() if prm.requires_grad], lr=a.lr, weight_decay=1e-4)
    if resumed is not None:
        try:
            opt.load_state_dict(resumed["opt"])  # its moments land on the parameters' device
        except Exception as e:  # an optimiser of other parameters
            raise SystemExit(f"{last}: not an enhancer run checkpoint (optimiser: {type(e).__name__})") from None
    log(f"model params {count_params(model)} on {device}; args {json.dumps({k: str(v) for k, v in vars(a).items()})}")

    if a.teacher_targets and not a.smoke:  # here, not first in a loader worker: a one-line error
        make_pools(a)
    win, syn = (torch.from_numpy(w).to(device) for w in windows(a.win))
    loss_fn = Loss(model.nfreq, a.asym, a.pause_weight, a.erb_weight, device, model.min_band_hz)
    # pitch features: per example in the workers, or per batch here (on a GPU the workers were the bottleneck)
    a.worker_features = a.pitch_features and (a.features_on == "workers" or (a.features_on == "auto" and device.type != "cuda"))
    batch_pitch = None
    if a.pitch_features and not a.worker_features:
        from models.enhancer.pitch_batch import BatchPitch

        if device.type == "mps":  # the search runs in float64, which MPS lacks
            raise SystemExit("--features-on trainer: not on mps (no float64); use --features-on workers")
        batch_pitch = BatchPitch(SR, windows(a.win)[0], HOP, a.min_band_hz, device)
    log(f"pitch features: {'none' if not a.pitch_features else 'in the data workers' if a.worker_features else f'by the trainer on {device.type}'}")
    loader = torch.utils.data.DataLoader(mix_stream(a, step), batch_size=a.batch, num_workers=a.workers,
                                         persistent_workers=a.workers > 0, prefetch_factor=4 if a.workers else None,
                                         pin_memory=device.type == "cuda")
    it = iter(loader)
    vx, vs = val_batch(a)
    vx_t, vs_t = torch.from_numpy(vx).to(device), torch.from_numpy(vs).to(device)
    vf_t = torch.from_numpy(pitch_features_of(vx, a.win, a.min_band_hz)).to(device) if a.pitch_features else None
    clean_clips = clean_batch(vs)
    warm = max(1, min(200, a.steps // 20))
    t_budget0 = time.time()
    budget_s = max(1.0, a.max_minutes * 60 - 30)

    def budget_used():
        return (time.time() - t_budget0) / budget_s

    def lr_at(k):
        if k < warm:
            return a.lr * (k + 1) / warm
        # cosine over steps, or over the wall-time budget when that runs out first, so a run
        # stopped by --max-minutes still ends at a low learning rate
        pr = min(1.0, max((k - warm) / max(1, a.steps - warm), budget_used()))
        return a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * pr)))

    def run(x, feats=None):
        """x [B, L] -> (S, Y, y); feats [T, B, NB_ERB] (computed here when the model takes them)."""
        S = stft(x, win)
        if a.pitch_features and feats is None:
            feats = (batch_pitch(x) if batch_pitch is not None
                     else torch.from_numpy(pitch_features_of(x.cpu().numpy(), a.win, a.min_band_hz)).to(x.device))
        extra = (feats,) if a.pitch_features else ()
        Y, *_ = model(S, *extra, *model.init_state(x.shape[0]))
        y = istft(Y, syn)
        return S, Y, y

    def validate():
        model.eval()
        with torch.no_grad():
            _, Y, y = run(vx_t, vf_t)
            s_d = torch.nn.functional.pad(vs_t, (HOP, 0))[:, : vs_t.shape[1]]
            Sv = stft(vs_t, win)
            l, parts = loss_fn(Y, Sv, y[:, HOP:], s_d[:, HOP:])
            noisy_sdr = si_sdr(torch.nn.functional.pad(vx_t, (HOP, 0))[:, HOP: vx_t.shape[1]], vs_t[:, : vx_t.shape[1] - HOP]).mean()
            level = clean_level_change(lambda c: run(c)[2], clean_clips, device)
        model.train()
        if a.select_by == "sisdr":
            score = float(parts["sisdr"])
        else:
            score = mean_pesq(s_d[:, HOP:].cpu().numpy(), y[:, HOP:].cpu().numpy())
            if a.select_by == "pesq+dnsmos":
                score += mean_dnsmos(y[:, HOP:].cpu().numpy())
        score -= a.clean_penalty * max(0.0, abs(level) - 0.5)
        return float(l), float(parts["sisdr"]), float(noisy_sdr), score, level

    def save(path):
        save_torch({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                    "hidden": a.hidden, "hidden_df": a.hidden_df, "df_gate": a.df_gate,
                    "deep_filter": a.deep_filter, "pitch_features": a.pitch_features, "win": a.win,
                    "min_band_hz": a.min_band_hz, "teacher_targets": a.teacher_targets,
                    "learn_start": a.learn_start, "train_only": a.train_only}, path)

    def keep(path):  # weights alone, on the CPU, loadable by --init
        save_torch({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "step": step,
                    "hidden": a.hidden, "hidden_df": a.hidden_df, "df_gate": a.df_gate,
                    "deep_filter": a.deep_filter, "pitch_features": a.pitch_features, "win": a.win,
                    "min_band_hz": a.min_band_hz, "learn_start": a.learn_start}, path)

    if resumed is None and a.force:  # the replaced run's weights go (an --init from them is read by now)
        for old in [last, a.ckpt / "best.pt", *a.ckpt.glob("step*.pt")]:
            old.unlink(missing_ok=True)
    saved_best = False  # this run's best.pt (a folder may hold an earlier run's, never exported as this one's)
    if step == 0 and (a.init is not None or a.init_onnx is not None):
        # a fine-tune's starting point is a candidate too: the run cannot end worse than it began
        vl, vsdr, nsdr, best, level = validate()
        save(a.ckpt / "best.pt")
        saved_best = True
        log(f"start: validation SI-SDR {vsdr:.2f} dB (noisy {nsdr:.2f} dB) clean voices {level:+.2f} dB "
            f"score {best:.3f}")
    model.train()
    t0 = time.time()
    t_wait = 0.0  # time the trainer waits for the loader: the loader should never be the bottleneck
    acc = {}
    n_acc = 0
    stop_reason = "steps"
    while step < a.steps:
        if time.time() - t_budget0 > a.max_minutes * 60:  # the LR schedule's clock: a data build is not counted
            stop_reason = "time budget"
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        tw = time.time()
        x, s, feats = (t.to(device, non_blocking=True) for t in next(it))
        t_wait += time.time() - tw
        L = x.shape[1] // HOP * HOP
        x, s = x[:, :L], s[:, :L]
        S_clean = stft(s, win)
        S_noisy, Y, y = run(x, feats.transpose(0, 1)[: L // HOP] if a.worker_features else None)
        s_d = torch.nn.functional.pad(s, (HOP, 0))[:, :L]  # the framing delays by HOP
        loss, parts = loss_fn(Y, S_clean, y[:, HOP:], s_d[:, HOP:], S_noisy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if not torch.isfinite(loss):
            log(f"step {step}: non-finite loss, skipped")
            continue
        opt.step()
        step += 1
        for k, v in {"loss": float(loss.detach()), "gn": float(gn), **parts}.items():
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        if step % a.log_every == 0 or step == a.steps:
            el = time.time() - t0
            msg = " ".join(f"{k} {v / n_acc:.4f}" for k, v in acc.items())
            log(f"step {step}/{a.steps} lr {lr_at(step):.2e} {msg} | {el / n_acc:.2f} s/step, "
                f"waiting for data {t_wait / el:.0%}")
            acc, n_acc, t0, t_wait = {}, 0, time.time(), 0.0
        if step % a.ckpt_every == 0:
            save(last)
        if a.keep_every and step % a.keep_every == 0:
            keep(a.ckpt / f"step{step}.pt")
        if step % a.val_every == 0 or step == a.steps:
            vl, vsdr, nsdr, score, level = validate()
            tag = ""
            if score > best:
                best = score
                save(a.ckpt / "best.pt")
                saved_best = True
                tag = " (best)"
            log(f"validation: loss {vl:.4f} SI-SDR {vsdr:.2f} dB (noisy {nsdr:.2f} dB) clean voices {level:+.2f} dB "
                f"score ({a.select_by}) {score:.3f}{tag}")
    save(last)
    log(f"stopped ({stop_reason}) at step {step}")
    src = a.ckpt / "best.pt" if saved_best or (resumed is not None and (a.ckpt / "best.pt").exists()) else last
    ck = torch.load(src, map_location="cpu", weights_only=False)
    model.cpu().load_state_dict(fit_weights({k: v.cpu() for k, v in ck["model"].items()}, model))
    a.export.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, a.export)
    log(f"exported {src.name} (step {ck['step']}) -> {a.export} ({a.export.stat().st_size / 1e6:.2f} MB)")
    for f in logf:
        f.close()
    return 0


if __name__ == "__main__":
    from realtime.errors import run_cli

    sys.exit(run_cli(main))
