"""The enhancer network (PyTorch, training only) and its streaming ONNX export.

Signal path (48 kHz): 480-sample (10 ms) sqrt-Hann analysis window, 240-sample (5 ms) hop,
241 bins; or (``win`` > 480, trainer's ``--win``) an asymmetric pair of a ``win``-sample analysis
window and a synthesis window over its last 480 samples (realtime/dsp/stft_windows.py): finer bins
(50 Hz at 960), the same 479-sample latency. Per frame the network sees
  * 32 ERB-band log powers of the noisy spectrum, and
  * the complex spectrum of 48 bins over 0..4.7 kHz (every win/480-th bin), normalised by its frame RMS,
  * with ``pitch_features`` (stage 13), the 32 bands' pitch correlations (realtime/dsp/pitch.py:
    how periodic each band is at the voice's period, computed outside the graph and fed as the
    input ``pcorr [T, B, 32]``; zeros where no period was found),
and predicts
  * 32 band gains (sigmoid), interpolated to the bins (triangular; the narrowest band is
    ``min_band_hz`` wide in whole bins: 200 Hz by default and in the shipped model), and
  * a causal deep filter (order 4: the current and 3 previous frames) for the low 48 bins,
    blended with the gained spectrum by a learned per-frame weight; with ``df_gate`` (since
    stage 10) the band gains scale the filtered bins too, so the whole spectrum shares one
    noise gate (without it the low bins kept 7-9 dB more noise in speech pauses than RNNoise).
Two GRU layers (encoder) + one GRU (deep-filter branch). No look-ahead anywhere: the
algorithmic latency is the analysis window, 480 samples = 10 ms (see MODEL_CARD.md).

The ONNX graph works on [T, B, F, 2] spectra for any T >= 1 and carries every piece of
state explicitly (GRU hidden states and the deep filter's frame history), so streaming one
frame at a time equals running the whole file in one call.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from realtime.dsp.erb import MIN_BAND_HZ, erb_bands, erb_matrices  # noqa: F401 - the runtime's pitch filter pools the same bands
from realtime.dsp.stft_windows import asymmetric_windows

SR = 48000
WIN = 480
HOP = 240
NFREQ = WIN // 2 + 1
NB_ERB = 32  # = realtime.dsp.erb's default
F_DF = 48
DF_ORDER = 4


def windows(win: int = WIN) -> tuple[np.ndarray, np.ndarray]:
    """(analysis, synthesis) float32 windows of a ``win``-sample frame at HOP; at 480 both are the
    periodic sqrt-Hann, whose square overlap-adds to 1 at hop N/2."""
    a, s = asymmetric_windows(win, HOP)
    return a.astype(np.float32), s.astype(np.float32)


class Enhancer(nn.Module):
    def __init__(self, hidden=128, hidden_df=96, df_gate=False, deep_filter=False, pitch_features=False, win=WIN,
                 min_band_hz=MIN_BAND_HZ, learn_start=False):
        super().__init__()
        if win % WIN or (deep_filter and win != WIN):
            raise ValueError(f"window {win}: a multiple of {WIN}, and {WIN} with a deep filter")
        self.hidden, self.hidden_df, self.df_gate = hidden, hidden_df, df_gate
        self.deep_filter, self.pitch_features = deep_filter, pitch_features
        self.win, self.nfreq, self.df_step, self.min_band_hz = win, win // 2 + 1, win // WIN, float(min_band_hz)
        # band powers on the scale of the 480-sample window whatever the window: a longer analysis
        # window gathers more energy per bin (sum of its squares)
        self.power_scale = float(np.sum(windows(WIN)[0].astype(np.float64) ** 2)
                                 / np.sum(windows(win)[0].astype(np.float64) ** 2))
        n_pitch = NB_ERB if pitch_features else 0
        pool, interp = erb_matrices(NB_ERB, self.nfreq, SR, self.min_band_hz)
        self.register_buffer("erb_pool", torch.from_numpy(pool))
        self.register_buffer("erb_interp", torch.from_numpy(interp))
        self.inp = nn.Linear(NB_ERB + 2 * F_DF + n_pitch, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=2)
        # learn_start: the encoder's state at a stream's start is trained (zeros until then) and
        # exported in the metadata (``h_enc_start``), so a stream that starts mid-word need not
        # begin from "no voice"
        self.learn_start = learn_start
        if learn_start:
            self.h_start = nn.Parameter(torch.zeros(2, 1, hidden))
        self.gain = nn.Linear(hidden + NB_ERB + n_pitch, NB_ERB)
        with torch.no_grad():
            self.gain.bias.fill_(1.0)
        if not deep_filter:  # band gains alone (since stage 11): no deep-filter branch, no state for it
            return
        self.register_buffer("rot", torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))  # multiplies by j
        self.df_gru = nn.GRU(hidden, hidden_df)
        self.df_out = nn.Linear(hidden_df, DF_ORDER * F_DF * 2 + 1)
        with torch.no_grad():
            self.df_out.weight.mul_(0.1)
            self.df_out.bias.zero_()
            b = self.df_out.bias[: DF_ORDER * F_DF * 2].view(DF_ORDER, F_DF, 2)
            b[0, :, 0] = 1.0  # identity filter at start

    def state_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        if not self.deep_filter:
            return {"h_enc": (2, batch, self.hidden)}
        return {
            "h_enc": (2, batch, self.hidden),
            "h_df": (1, batch, self.hidden_df),
            "df_hist": (DF_ORDER - 1, batch, F_DF, 2),
        }

    def init_state(self, batch: int):
        zeros = [torch.zeros(s, device=self.erb_pool.device) for s in self.state_shapes(batch).values()]
        if self.learn_start:
            zeros[0] = self.h_start.expand(-1, batch, -1).contiguous()  # cuDNN takes a contiguous hx only
        return tuple(zeros)

    def start_metadata(self) -> dict[str, str]:
        """The trained start state for the export's metadata: ``h_enc_start`` = its [2, hidden]
        float32 values, comma-separated (the runtime broadcasts them over the batch)."""
        if not self.learn_start:
            return {}
        v = self.h_start.detach().cpu().numpy().astype(np.float32).reshape(-1)
        return {"h_enc_start": ",".join(f"{x:.7g}" for x in v)}

    def band_features(self, p):
        """The network's band inputs from bin powers p [..., F]: scaled log mean power per band."""
        return (torch.log10(torch.matmul(p, self.erb_pool) * self.power_scale + 1e-10) + 3.0) * 0.25

    def forward(self, spec, *rest):
        """spec [T, B, F, 2], [pcorr [T, B, NB_ERB] with pitch features], h_enc[, h_df, df_hist]
        -> (enhanced spec [T, B, F, 2], h_enc[, h_df, df_hist])."""
        if self.pitch_features:
            pcorr, *rest = rest
        h_enc, h_df, df_hist = (*rest, None, None)[:3]
        T = spec.shape[0]
        p = (spec * spec).sum(dim=-1)  # [T,B,F]
        erb = self.band_features(p)
        low = slice(0, F_DF * self.df_step, self.df_step)  # 0..4.7 kHz whatever the bin width
        xdf = spec[:, :, low, :]
        nrm = torch.rsqrt(p[:, :, low].mean(dim=-1, keepdim=True) + 1e-6)
        dff = (xdf * nrm.unsqueeze(-1)).flatten(2)
        extra = [pcorr] if self.pitch_features else []
        x = torch.relu(self.inp(torch.cat([erb, dff, *extra], dim=-1)))
        e, h_enc = self.gru(x, h_enc)
        g_b = torch.sigmoid(self.gain(torch.cat([e, erb, *extra], dim=-1)))
        g = torch.matmul(g_b, self.erb_interp)
        y = spec * g.unsqueeze(-1)
        if not self.deep_filter:
            return y, h_enc
        d, h_df = self.df_gru(e, h_df)
        o = self.df_out(d)
        coef = o[..., : DF_ORDER * F_DF * 2].reshape(T, -1, DF_ORDER, F_DF, 2)
        alpha = torch.sigmoid(o[..., DF_ORDER * F_DF * 2 :]).unsqueeze(-1)  # [T,B,1,1]
        padded = torch.cat([df_hist, xdf], dim=0)  # [K-1+T, B, F_DF, 2]
        # frames t, t-1, ..., t-K+1 stacked on axis 2 -> [T, B, K, F_DF, 2]
        xs = torch.stack([padded[DF_ORDER - 1 - k :] if k == 0 else padded[DF_ORDER - 1 - k : -k]
                          for k in range(DF_ORDER)], dim=2)
        # complex product c*x = cr*x + ci*(j x), j x = x @ [[0, 1], [-1, 0]]
        jx = torch.matmul(xs, self.rot)
        df = (coef[..., 0:1] * xs + coef[..., 1:2] * jx).sum(dim=2)
        if self.df_gate:  # the band gains scale the deep filter too: a pause is cut in the low bins as above
            df = df * g[:, :, :F_DF].unsqueeze(-1)
        low = alpha * df + (1 - alpha) * y[:, :, :F_DF]
        out = torch.cat([low, y[:, :, F_DF:]], dim=2)
        return out, h_enc, h_df, padded[-(DF_ORDER - 1) :]


# ------------------------------------------------------------------------------------------
# Weights from another graph: other bands, no deep filter, pitch inputs, a wider encoder
# ------------------------------------------------------------------------------------------
def _band_spans(pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lower edges, centres) in Hz of the bands of a [F, NB] mean-pooling matrix."""
    hz = SR / 2 / (pool.shape[0] - 1)
    ks = [np.flatnonzero(pool[:, b]) for b in range(pool.shape[1])]
    return np.array([(k[0] - 0.5) * hz for k in ks]), np.array([k.mean() * hz for k in ks])


def band_map(old_pool: np.ndarray, new_pool: np.ndarray) -> np.ndarray:
    """For each band of ``new_pool`` ([F', NB] mean pooling over some frame's bins), the band of
    ``old_pool`` whose span in Hz holds its centre."""
    lo_old, _ = _band_spans(old_pool)
    _, centre_new = _band_spans(new_pool)
    return np.clip(np.searchsorted(lo_old, centre_new, side="right") - 1, 0, old_pool.shape[1] - 1)


def band_input_matrix(old_pool: np.ndarray, new_pool: np.ndarray) -> np.ndarray:
    """[NB old, NB new]: where each old band's input weights go. An old band that new bands were
    cut from (``band_map``) is split evenly among them; one that no new band was cut from (new bands
    wider there) goes whole to the new band holding its centre. Every row sums to 1, so equal band
    powers feed the encoder what they fed it before."""
    m = band_map(old_pool, new_pool)
    into = band_map(new_pool, old_pool)  # the new band holding each old band's centre
    a = np.zeros((old_pool.shape[1], new_pool.shape[1]), np.float32)
    for b in range(old_pool.shape[1]):
        cut = np.flatnonzero(m == b)
        if len(cut):
            a[b, cut] = 1.0 / len(cut)
        else:
            a[b, into[b]] = 1.0
    return a


def remap_bands(state: dict, old_pool: np.ndarray, new_pool: np.ndarray) -> dict:
    """Weights whose per-band inputs and outputs follow new bands: new band j takes the gain row of
    the old band its centre lies in, and the input columns of the old bands routed to it
    (``band_input_matrix``)."""
    idx = torch.from_numpy(band_map(old_pool, new_pool))
    route = torch.from_numpy(band_input_matrix(old_pool, new_pool))
    h0, n_in = state["inp.weight"].shape
    n_pitch = n_in - NB_ERB - 2 * F_DF
    out = dict(state)

    def cols(w, first):  # w with its band columns first..first+NB routed to the new bands
        w = w.clone()
        w[:, first:first + NB_ERB] = w[:, first:first + NB_ERB] @ route
        return w

    w = cols(state["inp.weight"], 0)
    out["inp.weight"] = cols(w, NB_ERB + 2 * F_DF) if n_pitch else w
    g = state["gain.weight"][idx]
    g = cols(g, h0)
    out["gain.weight"] = cols(g, h0 + NB_ERB) if n_pitch else g
    out["gain.bias"] = state["gain.bias"][idx]
    return out


def fit_weights(state: dict, model: Enhancer) -> dict:
    """Weights (a state dict) for ``model``: one without the deep filter drops that branch's; one
    with pitch features, from weights without them, gets zero weights for them; a wider encoder
    (``hidden``) than the weights' gets its new units (the same function to start from); weights
    of other bands (another ``min_band_hz``) are moved to the bands that cover the same Hz."""
    if not model.deep_filter:
        state = {k: v for k, v in state.items() if not k.startswith(("df_gru.", "df_out.", "rot"))}
    own = model.state_dict()
    if not getattr(model, "learn_start", False):  # a learnt start is dropped; weights without one start at zero
        state = {k: v for k, v in state.items() if k != "h_start"}
    # the band matrices are constants of the window and the bands, not learnt: the model's own
    if "erb_pool" in state:
        old, new = torch.as_tensor(state["erb_pool"]).cpu().numpy(), own["erb_pool"].cpu().numpy()
        if not np.array_equal(band_map(old, new), np.arange(NB_ERB)):
            state = remap_bands(state, old, new)
    state = {**state, "erb_pool": own["erb_pool"], "erb_interp": own["erb_interp"]}
    h0 = state["inp.weight"].shape[0]
    for k, reads_units in (("inp.weight", False), ("gain.weight", True)):
        # the inputs beyond the encoder's units (the gain head reads those units first)
        missing = (own[k].shape[1] - reads_units * model.hidden) - (state[k].shape[1] - reads_units * h0)
        if missing > 0:
            state = {**state, k: torch.cat([state[k], state[k].new_zeros(state[k].shape[0], missing)], dim=1)}
    if h0 < model.hidden:
        state = widen(state, own, h0, model.hidden)
    if getattr(model, "learn_start", False):  # none yet (zeros, as before), or a narrower one's (new units at 0)
        start = own["h_start"].new_zeros(own["h_start"].shape)
        if "h_start" in state:
            start[..., : state["h_start"].shape[-1]] = torch.as_tensor(state["h_start"])
        state = {**state, "h_start": start}
    return state


def average_weights(states: list[dict]) -> dict:
    """The mean of several state dicts of one graph (a "model soup": checkpoints kept along one
    fine-tune from one start sit in one basin, and their mean often scores above each of them).
    ValueError when the names or shapes differ."""
    first = states[0]
    for s in states[1:]:
        if s.keys() != first.keys() or any(s[k].shape != first[k].shape for k in first):
            raise ValueError("the checkpoints are of different graphs (names or shapes differ)")
    return {k: (torch.stack([s[k] for s in states]).mean(dim=0) if first[k].is_floating_point() else first[k])
            for k in first}


def widen(state: dict, own: dict, h0: int, h1: int) -> dict:
    """Net2Net-style widening of the encoder from h0 to h1 units, function-preserving: the old
    units keep their weights and never read a new unit (those columns are zero); the new units
    keep ``own``'s fresh initialisation for what they read, and nothing reads them yet (their
    outgoing weights are zero), so training grows them from the old function."""
    out = dict(state)

    def rows(k, n_gates):  # old unit i of each gate: row g*h0+i -> g*h1+i, reading no new unit
        new = own[k].clone()
        for g in range(n_gates):
            old, dst = state[k][g * h0: (g + 1) * h0], new[g * h1: g * h1 + h0]
            if dst.dim() == 1:
                dst.copy_(old)
            else:
                dst.zero_()
                dst[:, : old.shape[1]] = old
        return new

    out["inp.weight"], out["inp.bias"] = rows("inp.weight", 1), rows("inp.bias", 1)
    for layer in (0, 1):
        for kind in ("ih", "hh"):
            out[f"gru.weight_{kind}_l{layer}"] = rows(f"gru.weight_{kind}_l{layer}", 3)
            out[f"gru.bias_{kind}_l{layer}"] = rows(f"gru.bias_{kind}_l{layer}", 3)
    g = own["gain.weight"].clone()
    g[:, :h0] = state["gain.weight"][:, :h0]
    g[:, h0:h1] = 0
    g[:, h1:] = state["gain.weight"][:, h0:]
    out["gain.weight"] = g
    return out


# ------------------------------------------------------------------------------------------
# STFT / iSTFT in torch matching the runtime framing exactly
# ------------------------------------------------------------------------------------------
def stft(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """x [B, L] (L multiple of HOP) -> [T, B, F, 2], frame t = x[(t+1)*HOP - N : (t+1)*HOP] (N = len(win))."""
    n = win.shape[0]
    xp = torch.nn.functional.pad(x, (n - HOP, 0))
    fr = xp.unfold(-1, n, HOP) * win  # [B, T, N]
    X = torch.fft.rfft(fr, dim=-1)
    return torch.view_as_real(X).permute(1, 0, 2, 3).contiguous()


def istft(S: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """[T, B, F, 2] -> [B, T*HOP] with the synthesis window ``win``; output sample m equals input sample
    m - HOP (PR). Only a frame's last 2 hops are synthesised (the rest of an asymmetric ``win`` is 0)."""
    n = win.shape[0]
    fr = torch.fft.irfft(torch.view_as_complex(S.contiguous()), n=n, dim=-1)[..., n - 2 * HOP:] * win[n - 2 * HOP:]
    first, second = fr[..., :HOP], fr[..., HOP:]
    prev = torch.cat([torch.zeros_like(second[:1]), second[:-1]], dim=0)
    y = (first + prev).permute(1, 0, 2)
    return y.reshape(y.shape[0], -1)


# ------------------------------------------------------------------------------------------
def export_onnx(model: Enhancer, path, opset=17) -> None:
    """Export with explicit streaming state; single file, dynamic T and B. Written to a temporary
    file, metadata included, then renamed: a full disk or a Ctrl-C keeps the previous export whole
    (an OSError naming ``path`` says why)."""
    import onnx

    from realtime.io.files import atomic_write

    path = Path(path)
    model = model.eval()
    B = 1
    spec = torch.zeros(3, B, model.nfreq, 2)
    feats = (torch.zeros(3, B, NB_ERB),) if model.pitch_features else ()
    states = model.init_state(B)
    state_names = list(model.state_shapes(B))
    names_in = ["spec", *(["pcorr"] if feats else []), *state_names]
    names_out = ["enh", *(f"{k}_out" for k in state_names)]
    dyn = ({"spec": {0: "T", 1: "B"}, "pcorr": {0: "T", 1: "B"}, "enh": {0: "T", 1: "B"}}
           | {k: {1: "B"} for k in state_names + names_out[1:]})
    if not feats:
        del dyn["pcorr"]
    import warnings

    meta = {"sample_rate": SR, "win": model.win, "hop": HOP, "n_freq": model.nfreq,
            "window": "sqrt-hann-periodic" if model.win == 2 * HOP else "asymmetric-sqrt-hann", "lookahead": 0, "df_gate": int(model.df_gate),
            "deep_filter": int(model.deep_filter), "pitch_features": int(model.pitch_features),
            "min_band_hz": model.min_band_hz,
            "state": ",".join(f"{k}:{'x'.join(map(str, v))}" for k, v in model.state_shapes(1).items()),
            "producer": "models/enhancer/train.py", **model.start_metadata()}
    try:
        with atomic_write(path, suffix=".onnx.part") as tmp:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (spec, *feats, *states), str(tmp), input_names=names_in,
                                  output_names=names_out, dynamic_axes=dyn, opset_version=opset,
                                  dynamo=False)
            m = onnx.load(str(tmp))
            for k, v in meta.items():
                p = m.metadata_props.add()
                p.key, p.value = k, str(v)
            onnx.checker.check_model(m)
            onnx.save(m, str(tmp))
            from models.export_check import check_parity

            rng = np.random.default_rng(0)  # a few frames of noise-like spectra from the start state
            x = {"spec": (0.1 * rng.standard_normal((5, B, model.nfreq, 2))).astype(np.float32)}
            if feats:
                x["pcorr"] = rng.uniform(0, 1, (5, B, NB_ERB)).astype(np.float32)
            check_parity(tmp, model, x | {k: v.detach().numpy() for k, v in zip(state_names, states)})
    except OSError as e:  # the write's reason (a full disk) for the file the user named, not the temporary one
        raise OSError(e.errno, e.strerror, str(path)) from None


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    m = Enhancer()
    print("params", count_params(m), "bands", erb_bands())
