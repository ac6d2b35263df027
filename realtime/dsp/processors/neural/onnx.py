"""ONNX Runtime for the neural processors: one session type for models with explicit state.

``StatefulSession`` is the one way a processor runs a model: it loads the file (a missing,
corrupt or mis-shaped model is a ``ModelError`` naming the file), reads its metadata, chooses
the execution provider (and says which it got), sets the thread count deliberately, and carries
the model's streaming state between calls. Every recurrent state and history is an ONNX input
with a matching output (``<name>_out``); the session keeps two sets of state buffers and binds
them crosswise (ping-pong), so one call's state outputs are written straight into the next
call's state inputs. Inputs and outputs are bound once, per call shape, to buffers the processor
preallocates: a run allocates nothing and copies nothing.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Hashable, Iterable

import numpy as np

from realtime.errors import ModelError

START_SUFFIX = "_start"  # metadata "<state>_start": a trained start state (comma-separated values for one batch item)

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
              "tensorrt": "TensorrtExecutionProvider"}


_said: set[str] = set()


def _say_once(line: str) -> None:
    """One line on stderr, once per process (a fallback is worth saying, not repeating per stream)."""
    import sys

    if line not in _said:
        _said.add(line)
        print(f"warning: {line}", file=sys.stderr)


def providers_of(chain) -> dict[str, str]:
    """Slot id -> the execution provider its model runs on, for every slot running ONNX models."""
    out = {}
    for s in chain.slots:
        p = s.processor
        sessions = [p.session] if hasattr(p, "session") else [i.session for i in getattr(p, "instruments", {}).values()]
        names = sorted({x.provider for x in sessions if isinstance(x, StatefulSession)})
        if names:
            out[s.id] = ", ".join(names)
    return out


def choose_providers(want: str, available: list[str], what: str = "model") -> list[str]:
    """Execution providers to ask ONNX Runtime for, best first.

    Parameters
    ----------
    want : str
        ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``tensorrt``.
    available : list of str
        ``onnxruntime.get_available_providers()``.
    what : str
        The model's name, for the error message.

    Returns
    -------
    list of str
        Provider names; ``CPUExecutionProvider`` is always last, as the fallback.

    Raises
    ------
    ModelError
        ``want`` is unknown, or names a provider this onnxruntime does not have.
    """
    want = (want or "auto").lower()
    if want == "auto":
        order = [p for p in ("CUDAExecutionProvider",) if p in available]
    elif want in _PROVIDERS:
        if _PROVIDERS[want] not in available:
            raise ModelError(f"{what}: provider {want!r} not available (have {available})")
        order = [_PROVIDERS[want]] if want != "cpu" else []
        if want == "tensorrt" and "CUDAExecutionProvider" in available:
            order.append("CUDAExecutionProvider")
    else:
        raise ModelError(f"{what}: unknown provider {want!r}; use auto, cpu, cuda or tensorrt")
    return order + ["CPUExecutionProvider"]


def run_options():
    """The ``RunOptions`` every real-time run passes. Without any, ONNX Runtime's Python side keeps
    a little memory now and then per run (the synth, several calls a block, crossed its tests' 8 KiB
    per 30 blocks). It says gpu_graph_id -1 (no CUDA graph, which no session here captures): given
    options without that entry, ONNX Runtime looks it up through a C++ exception on every run
    (35 us, as long as a synth decoder call)."""
    import onnxruntime as ort

    ro = ort.RunOptions()
    ro.add_run_config_entry("gpu_graph_id", "-1")
    ro.log_severity_level = 4  # a run that fails raises (said in one line): not also a red log line on stderr
    return ro


def bind_output(io, name: str, arr: np.ndarray) -> None:
    """Bind output ``name`` to ``arr``'s memory (ONNX Runtime writes there, in place)."""
    if not arr.flags.c_contiguous:
        raise ValueError(f"output {name}: the bound buffer must be C-contiguous")
    io.bind_output(name, "cpu", 0, arr.dtype.type, list(arr.shape), arr.ctypes.data)


def first_line(e: BaseException, limit: int = 240) -> str:
    """The first line of an exception's message, cut to ``limit`` characters (onnxruntime's, once a
    graph node fails, spans many, its source paths included)."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return line if len(line) <= limit else line[:limit] + "..."


class StatefulSession:
    """One ONNX model with explicit streaming state, tuned for one real-time stream.

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file.
    what : str
        The model's name in messages (``"enhancer"``, ``"DDSP violin"``).
    inputs : tuple of str, optional
        The input names the model must have, in order.
    outputs : tuple of str, optional
        The output names the model must have, in order.
    provider : str
        ``auto``, ``cpu``, ``cuda`` or ``tensorrt`` (see ``choose_providers``).
    threads : int
        ``intra_op_num_threads``: one stream is small work, so one thread by default — a
        predictable cost on the DSP thread, and no pool of spinning threads competing with it.
    train_hint : str
        The command that makes the model, named when the file is missing.

    Raises
    ------
    ModelError
        The file is missing, is not a valid ONNX model, or its inputs/outputs differ from
        ``inputs``/``outputs``; or the provider is not available.

    Attributes
    ----------
    session : onnxruntime.InferenceSession
        The session itself (for prepare-time work: ``get_inputs``, plain ``run``).
    metadata : dict of str
        The model's custom metadata.
    provider : str
        The execution provider it runs on, e.g. ``"CPUExecutionProvider"``.
    """

    def __init__(self, path, what: str = "model", inputs: tuple[str, ...] | None = None,
                 outputs: tuple[str, ...] | None = None, provider: str = "auto", threads: int = 1,
                 train_hint: str = ""):
        import onnxruntime as ort

        self.path, self.what, self.threads = Path(path), what, int(threads)
        if not self.path.is_file():
            hint = f" (train it with `{train_hint}`)" if train_hint else ""
            raise ModelError(f"{what} model not found: {self.path}{hint}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        providers = choose_providers(provider, ort.get_available_providers(), what)
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as e:  # onnxruntime raises several types for unreadable files
            raise ModelError(f"{what} model {self.path} is corrupt or not a valid ONNX model: {e}") from None
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        if inputs is not None and self.input_names != tuple(inputs):
            raise self.error(f"has inputs {list(self.input_names)}, expected {list(inputs)}")
        if outputs is not None and self.output_names != tuple(outputs):
            raise self.error(f"has outputs {list(self.output_names)}, expected {list(outputs)}")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.provider = self.session.get_providers()[0]
        if providers[0] != "CPUExecutionProvider" and self.provider == "CPUExecutionProvider":
            _say_once(f"{what}: {providers[0]} did not start (its CUDA/cuDNN libraries did not load; "
                      "the gpu extra installs them: .venv/bin/pip install -e '.[gpu]'); running on the CPU")
        self._states: list[dict[str, np.ndarray]] = [{}, {}]
        self._starts: dict[str, np.ndarray] = {}
        self._state_outputs: dict[str, str] = {}
        self._bindings: dict[Hashable, tuple] = {}
        self._keep: list[np.ndarray] = []
        self._parity = 0
        self.run_options = run_options()

    # -- metadata -----------------------------------------------------------------------------
    def error(self, problem: str) -> ModelError:
        """A ``ModelError`` that names the model and its file: ``<what> model <path> <problem>``."""
        return ModelError(f"{self.what} model {self.path} {problem}")

    def metadata_values(self, cast: Callable, *keys: str) -> tuple:
        """``cast(metadata[key])`` for each key.

        Raises
        ------
        ModelError
            A key is missing or its value does not convert.
        """
        try:
            return tuple(cast(self.metadata[k]) for k in keys)
        except (KeyError, ValueError, TypeError):
            raise self.error(f"lacks {'/'.join(keys)} metadata") from None

    def input_shape(self, name: str) -> list:
        """The declared shape of input ``name`` (symbolic axes as strings)."""
        return next(i.shape for i in self.session.get_inputs() if i.name == name)

    def output_shape(self, name: str) -> list:
        """The declared shape of output ``name`` (symbolic axes as strings)."""
        return next(o.shape for o in self.session.get_outputs() if o.name == name)

    # -- state and bindings -------------------------------------------------------------------
    def allocate_state(self, shapes: dict[str, tuple[int, ...]], outputs: dict[str, str] | None = None) -> None:
        """Allocate the two (ping-pong) sets of state buffers, float32, at their start states (zeros
        unless ``read_start_states`` found trained ones).

        Parameters
        ----------
        shapes : dict
            State input name -> its full shape (the largest batch the processor binds).
        outputs : dict, optional
            State input name -> the output that carries its next value (default ``<name>_out``).
        """
        outputs = outputs or {}
        self._state_outputs = {k: outputs.get(k, f"{k}_out") for k in shapes}
        missing = [o for o in self._state_outputs.values() if o not in self.output_names]
        if missing:
            raise self.error(f"lacks the state outputs {missing}")
        for name, out in self._state_outputs.items():  # the next state must fit where this one is read
            a, b = self.input_shape(name), self.output_shape(out)
            if len(a) != len(b) or any(isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a, b)):
                raise self.error(f"declares its state output {out!r} as {b} but its input {name!r} as {a}: re-export it")
        self._states = [{k: np.zeros(s, np.float32) for k, s in shapes.items()} for _ in range(2)]
        self.reset_state()
        self._bindings = {}
        self._keep = []
        self._parity = 0

    def bind(self, key: Hashable, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
             state_view: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        """Bind one call shape, under ``key``, for both ping-pong parities.

        Parameters
        ----------
        key : hashable
            What ``run`` is called with (e.g. the number of frames).
        inputs, outputs : dict
            Data (non-state) name -> the preallocated array it is read from / written to; outputs
            must be C-contiguous. They must stay alive and in place: the binding keeps their address.
        state_view : callable, optional
            Maps each full state buffer to the part this shape uses (e.g. the first n voices).
        """
        view = state_view or (lambda a: a)
        pair = []
        for p in (0, 1):
            io = self.session.io_binding()
            for name, arr in inputs.items():
                io.bind_cpu_input(name, arr)
            for name, arr in outputs.items():
                bind_output(io, name, arr)
            for name, out_name in self._state_outputs.items():
                io.bind_cpu_input(name, view(self._states[p][name]))
                bind_output(io, out_name, view(self._states[1 - p][name]))
            pair.append(io)
        self._keep.extend(inputs.values())
        self._keep.extend(outputs.values())
        self._bindings[key] = tuple(pair)

    @property
    def keys(self) -> list:
        """The bound call shapes."""
        return list(self._bindings)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The state buffers the next ``run`` reads (a processor may edit them in place)."""
        return self._states[self._parity]

    def read_start_states(self, names: Iterable[str]) -> None:
        """Take the trained start states of the state inputs ``names`` from the metadata
        (``<name>_start``: the values for one batch item, comma-separated); states without one start
        at zero. ``reset_state`` and ``contain_state`` go back to them.

        Raises
        ------
        ModelError
            A start state is not as many finite numbers as its state holds per batch item.
        """
        self._starts = {k: self._start_value(k) for k in names if f"{k}{START_SUFFIX}" in self.metadata}

    def _start_value(self, name: str) -> np.ndarray:
        """``name``'s start state, shaped [shape[0], 1, ...] to broadcast over the batch (axis 1)."""
        shape = self.input_shape(name)
        one = (shape[0], 1, *shape[2:])
        n = math.prod(one) if all(isinstance(d, int) for d in one) else None  # None: symbolic axes
        try:
            v = np.array([float(x) for x in self.metadata[f"{name}{START_SUFFIX}"].split(",")], np.float32)
            if v.size != n or not np.all(np.isfinite(v)):
                raise ValueError
        except ValueError:
            n = n or "a fixed number of"
            raise self.error(f"has a broken {name}{START_SUFFIX} in its metadata "
                             f"({n} finite numbers expected): re-export it") from None
        return v.reshape(one)

    def reset_state(self, values: dict[str, np.ndarray | float] | None = None) -> None:
        """Set both state sets to ``values[name]`` (broadcast), by default the model's trained start
        states (metadata ``<name>_start``), 0 for the others."""
        values = self._starts if values is None else values
        for st in self._states:
            for name, arr in st.items():
                arr[...] = values.get(name, 0.0)
        self._parity = 0

    def contain_state(self, batch: slice = slice(None), axes: dict[str, int] | None = None) -> None:
        """A numerical blow-up starts afresh: if any state holds a non-finite value in ``batch``
        (along each state's batch axis: ``axes[name]``, axis 1 by default), that part of every state
        goes back to its start. No allocation but the index tuples."""
        total = 0.0
        for name, a in self.state.items():
            total += float(a[self._batch_index(name, batch, axes)].sum())
        if not math.isfinite(total):
            for name, a in self.state.items():
                a[self._batch_index(name, batch, axes)] = self._starts.get(name, 0.0)

    @staticmethod
    def _batch_index(name: str, batch: slice, axes: dict[str, int] | None) -> tuple:
        """``batch`` along state ``name``'s batch axis, as an index."""
        return (slice(None),) * (1 if axes is None else axes[name]) + (batch,)

    def run(self, key: Hashable) -> None:
        """Run the call shape bound under ``key``: reads the current state, writes the next."""
        self.session.run_with_iobinding(self._bindings[key][self._parity], self.run_options)
        self._parity ^= 1

    def warm_up(self, keys: Iterable[Hashable] | None = None) -> None:
        """Run each call shape once (all bound ones by default), then zero the state.

        The first runs of a shape allocate ONNX Runtime's buffers and pick its kernels: done
        here, before the stream starts, they never land on the audio path.
        """
        try:
            for key in self.keys if keys is None else keys:
                self.run(key)
        except Exception as e:  # noqa: BLE001 - onnxruntime's words: a model that loads but cannot run as bound
            raise self.error(f"does not run: {first_line(e)}") from None
        self.reset_state()
