"""The enhancer network (PyTorch, training only) and its streaming ONNX export.

Signal path (48 kHz): 480-sample (10 ms) sqrt-Hann analysis window, 240-sample (5 ms) hop,
241 bins. Per frame the network sees
  * 32 ERB-band log powers of the noisy spectrum, and
  * the complex spectrum of the lowest 48 bins (0..4.7 kHz), normalised by its frame RMS,
  * with ``pitch_features`` (stage 13), the 32 bands' pitch correlations (realtime/dsp/pitch.py:
    how periodic each band is at the voice's period, computed outside the graph and fed as the
    input ``pcorr [T, B, 32]``; zeros where no period was found),
and predicts
  * 32 band gains (sigmoid), interpolated to the 241 bins (triangular), and
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

import numpy as np
import torch
from torch import nn

from realtime.dsp.erb import erb_bands, erb_matrices  # noqa: F401 - the runtime's pitch filter pools the same bands

SR = 48000
WIN = 480
HOP = 240
NFREQ = WIN // 2 + 1
NB_ERB = 32  # = realtime.dsp.erb's default
F_DF = 48
DF_ORDER = 4


def window() -> np.ndarray:
    """Periodic sqrt-Hann: analysis and synthesis; its square overlap-adds to 1 at hop N/2."""
    n = np.arange(WIN)
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * n / WIN)).astype(np.float32)


class Enhancer(nn.Module):
    def __init__(self, hidden=128, hidden_df=96, df_gate=False, deep_filter=False, pitch_features=False):
        super().__init__()
        self.hidden, self.hidden_df, self.df_gate = hidden, hidden_df, df_gate
        self.deep_filter, self.pitch_features = deep_filter, pitch_features
        n_pitch = NB_ERB if pitch_features else 0
        pool, interp = erb_matrices()
        self.register_buffer("erb_pool", torch.from_numpy(pool))
        self.register_buffer("erb_interp", torch.from_numpy(interp))
        self.inp = nn.Linear(NB_ERB + 2 * F_DF + n_pitch, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=2)
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
        return tuple(torch.zeros(s, device=self.erb_pool.device) for s in self.state_shapes(batch).values())

    def forward(self, spec, *rest):
        """spec [T, B, F, 2], [pcorr [T, B, NB_ERB] with pitch features], h_enc[, h_df, df_hist]
        -> (enhanced spec [T, B, F, 2], h_enc[, h_df, df_hist])."""
        if self.pitch_features:
            pcorr, *rest = rest
        h_enc, h_df, df_hist = (*rest, None, None)[:3]
        T = spec.shape[0]
        p = (spec * spec).sum(dim=-1)  # [T,B,F]
        erb = (torch.log10(torch.matmul(p, self.erb_pool) + 1e-10) + 3.0) * 0.25
        xdf = spec[:, :, :F_DF, :]
        nrm = torch.rsqrt(p[:, :, :F_DF].mean(dim=-1, keepdim=True) + 1e-6)
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
# STFT / iSTFT in torch matching the runtime framing exactly
# ------------------------------------------------------------------------------------------
def fit_weights(state: dict, model: Enhancer) -> dict:
    """Weights (a state dict) for ``model``: one without the deep filter drops that branch's; one
    with pitch features, from weights without them, gets zero weights for them; a wider encoder
    (``hidden``) than the weights' gets its new units (the same function to start from)."""
    if not model.deep_filter:
        state = {k: v for k, v in state.items() if not k.startswith(("df_gru.", "df_out.", "rot"))}
    own = model.state_dict()
    h0 = state["inp.weight"].shape[0]
    for k, reads_units in (("inp.weight", False), ("gain.weight", True)):
        # the inputs beyond the encoder's units (the gain head reads those units first)
        missing = (own[k].shape[1] - reads_units * model.hidden) - (state[k].shape[1] - reads_units * h0)
        if missing > 0:
            state = {**state, k: torch.cat([state[k], state[k].new_zeros(state[k].shape[0], missing)], dim=1)}
    if h0 < model.hidden:
        state = widen(state, own, h0, model.hidden)
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


def stft(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """x [B, L] (L multiple of HOP) -> [T, B, F, 2], frame t = x[t*HOP-HOP : t*HOP+HOP]."""
    xp = torch.nn.functional.pad(x, (WIN - HOP, 0))
    fr = xp.unfold(-1, WIN, HOP) * win  # [B, T, WIN]
    X = torch.fft.rfft(fr, dim=-1)
    return torch.view_as_real(X).permute(1, 0, 2, 3).contiguous()


def istft(S: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """[T, B, F, 2] -> [B, T*HOP]; output sample m equals input sample m - HOP (PR)."""
    fr = torch.fft.irfft(torch.view_as_complex(S.contiguous()), n=WIN, dim=-1) * win  # [T,B,WIN]
    first, second = fr[..., :HOP], fr[..., HOP:]
    prev = torch.cat([torch.zeros_like(second[:1]), second[:-1]], dim=0)
    y = (first + prev).permute(1, 0, 2)
    return y.reshape(y.shape[0], -1)


# ------------------------------------------------------------------------------------------
def export_onnx(model: Enhancer, path, opset=17) -> None:
    """Export with explicit streaming state; single file, dynamic T and B."""
    import onnx

    model = model.eval()
    B = 1
    spec = torch.zeros(3, B, NFREQ, 2)
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

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (spec, *feats, *states), str(path), input_names=names_in,
                          output_names=names_out, dynamic_axes=dyn, opset_version=opset,
                          dynamo=False)
    m = onnx.load(str(path))
    meta = {"sample_rate": SR, "win": WIN, "hop": HOP, "n_freq": NFREQ,
            "window": "sqrt-hann-periodic", "lookahead": 0, "df_gate": int(model.df_gate),
            "deep_filter": int(model.deep_filter), "pitch_features": int(model.pitch_features),
            "state": ",".join(f"{k}:{'x'.join(map(str, v))}" for k, v in model.state_shapes(1).items()),
            "producer": "models/enhancer/train.py"}
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    m = Enhancer()
    print("params", count_params(m), "bands", erb_bands())
