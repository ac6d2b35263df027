"""Numba intrinsics for the lock-free rings and the compiled callback.

Memory ordering (why the rings are correct): each ring index has exactly one writer. The
producer fills slots with ordinary stores, then publishes its write index with an atomic
*release* store; the consumer reads that index with an atomic *acquire* load before it reads
the slots (and symmetrically for the read index, which frees slots for the producer). Release/
acquire is the C11 pairing that guarantees the slot stores are visible before the index that
announces them, on any CPU: on x86-64 (TSO) it compiles to plain moves plus a compiler barrier,
on ARM64 to ldar/stlr. Plain Numba array stores would let LLVM reorder or cache them, so the
indices go through these intrinsics only.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def address_as_pointer(typingctx, addr):
    """Turn an integer address (from ndarray.ctypes.data) into a void* inside compiled code."""
    if not isinstance(addr, types.Integer):
        return None
    sig = types.voidptr(addr)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return sig, codegen


def _item_pointer(context, builder, arrty, arr, index):
    array = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, array, [index])


@intrinsic
def load_acquire(typingctx, arr, index):
    """Atomic acquire load of int64 ``arr[index]``."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.int64(arr, index)

    def codegen(context, builder, signature, args):
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, ordering="acquire", align=8)

    return sig, codegen


@intrinsic
def store_release(typingctx, arr, index, value):
    """Atomic release store ``arr[index] = value`` (int64)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
        return None
    sig = types.void(arr, index, value)

    def codegen(context, builder, signature, args):
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1])
        val = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(val, ptr, ordering="release", align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def pointer_as_address(typingctx, ptr):
    """void* -> int64, so compiled code can test a pointer for NULL."""
    if not (isinstance(ptr, (types.CPointer, types.RawPointer)) or ptr == types.voidptr):
        return None
    sig = types.int64(ptr)

    def codegen(context, builder, signature, args):
        return builder.ptrtoint(args[0], ir.IntType(64))

    return sig, codegen


from numba import njit  # noqa: E402


@njit(nogil=True, cache=True)
def publish(ctl, slot, value):
    """``ctl[slot] = value`` as a release store, from Python: a compiled reader that loads ``slot``
    with acquire sees every store made before it (plain numpy stores may be reordered on ARM)."""
    store_release(ctl, slot, value)


@njit(nogil=True, cache=True)
def observe(ctl, slot):
    """``ctl[slot]`` as an acquire load, from Python (the other side of ``publish``)."""
    return load_acquire(ctl, slot)

