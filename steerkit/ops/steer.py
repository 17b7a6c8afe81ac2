"""steer_(h, config, table): the fused per-row op.

Row t applies configuration ``config[t]`` (int32, shape h.shape[:-1]) of a SteeringTable: scale,
optional dynamic scale, up to R directions set to target values, then a vector with a strength,
in one read and one write of the row. Configuration 0 is the identity (rows bit-identical).
The table is unpacked here; the registered op takes its tensors. (The table is duck-typed:
anything with ``d``, ``device`` and ``tensors()`` in SteeringTable's order works.)
"""
from __future__ import annotations

import operator
import weakref
from typing import Optional

import torch

from . import _checks as C
from . import reference
from ._registry import call, inplace_launch, register, vector_for_kernels

_TABLE = ("Tensor scale, Tensor flags, Tensor dyn_w, Tensor dyn_b, Tensor dirs, Tensor dir_val, "
          "Tensor n_dirs, Tensor vec, Tensor strength")


def _prepare(x, config, scale, flags, dyn_w, dyn_b, dirs, dir_val, n_dirs, vec, strength):
    return (config.reshape(-1).contiguous(), scale, flags, vector_for_kernels(dyn_w, x), dyn_b,
            vector_for_kernels(dirs, x), dir_val, n_dirs, vector_for_kernels(vec, x), strength)


register("steer", "Tensor config, " + _TABLE, reference.steer, _prepare)


def _params(op, h, config, table, validate):
    return (config, *C.config_table(op, h, config, table, "steerkit.SteeringTable", "d", validate))


def _compiled_reference(table):
    """Under torch.compile: the reference restricted to the kinds of intervention the table has
    held (``table.uses``), so graphs carry only what is used. A table that starts using a new
    kind makes compiled models recompile once; ``SteeringTable.expect`` avoids even that."""
    if not torch.compiler.is_compiling():  # eager: the kernels branch per row, nothing to build
        return None
    u = getattr(table, "_uses", None)  # the record behind SteeringTable.uses: a dict, so guards read
    if u is None:                      # it directly (a property would be called on every guard check)
        return None
    return reference.steer_uses, {"uses": _uses(u)}


def _uses(record: dict) -> tuple:
    """(scale, dynamic, directions, vector) from a table's (or stack's) record of kinds used."""
    return record["scale"], record["dynamic"], record["directions"], record["vector"]


# Eager in-place calls with validate=False (the model integration's hooks): the prepared
# launches per table (ops._registry.FastLaunch; in ``table._launches`` for a SteeringTable, else
# here), one per config tensor (the last few: a model's prefill and decode steps each have
# theirs), reused while the table's tensors, the config tensor, h's dtype/device/shape and the
# backend request are the same objects/values.
# It skips the checks, the preparation and, on Triton, the generic launch path: most of the host
# time of a call. Entries hold their config tensor, so its id() is not reused while they live.
_FAST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_FAST_PER_TABLE = 4


def prepared_launch(h, config, table, backend: Optional[str] = None):
    """The prepared eager launch that ``steer_(h, config, table, backend=backend,
    validate=False)`` would reuse now (``run(h) -> bool``, in place), or None. The model
    integration keeps it per site and calls it directly while the same arguments recur; ``run``
    holds what it launches with (the config tensor's and the table tensors' memory)."""
    entries = getattr(table, "_launches", None)  # a SteeringTable keeps its own
    if entries is None:
        try:
            entries = _FAST.get(table)
        except TypeError:  # a table type that cannot be weakly referenced: no fast path
            return None
    e = None if entries is None else entries.get(id(config))
    if e is None or e[0] is not config:
        return None
    # the key's parts compared one by one, the cheapest first (this runs once per layer in an
    # eager decode step, where host time is the cost): dtypes are singletons, a device as its index
    dtype, device, shape, back = e[1]
    if (dtype is not h.dtype or shape != h.shape or back != backend or type(h) is not torch.Tensor
            or torch.is_grad_enabled() or device != h.get_device() or torch.compiler.is_compiling()
            or not all(map(operator.is_, table.tensors(), e[2]))):
        return None
    return e[3]


def _fast_steer_(h, config, table, backend) -> bool:
    run = prepared_launch(h, config, table, backend)
    return run is not None and run(h)


def _remember(table, config, entry) -> None:
    entries = getattr(table, "_launches", None)
    if entries is None:
        try:
            entries = _FAST.setdefault(table, {})
        except TypeError:
            return
    entries.pop(id(config), None)
    while len(entries) >= _FAST_PER_TABLE:
        entries.pop(next(iter(entries)))  # the oldest
    entries[id(config)] = entry


def steer_(h: torch.Tensor, config: torch.Tensor, table, *, backend: Optional[str] = None,
           validate: bool = True) -> torch.Tensor:
    """In place: row t of h gets configuration config[t] of ``table``. Returns h."""
    if not validate and _fast_steer_(h, config, table, backend):
        return h
    params = _params("steer_", h, config, table, validate)
    if not validate and isinstance(config, torch.Tensor) and config.is_contiguous():  # reshape = view
        run = inplace_launch("steer", h, params, backend)
        if run is not None:
            _remember(table, config, (config, (h.dtype, h.get_device(), h.shape, backend), params[1:], run))
            if run(h):
                return h
    return call("steer", True, h, params, backend, _compiled_reference(table))


def steer(h: torch.Tensor, config: torch.Tensor, table, *, backend: Optional[str] = None,
          validate: bool = True) -> torch.Tensor:
    """Out of place; differentiable in h and in the table's float tensors (scale, dynamic-scale
    weights and bias, directions and their values, vectors, strengths)."""
    return call("steer", False, h, _params("steer", h, config, table, validate), backend, _compiled_reference(table))


def steer_stacked(h: torch.Tensor, config: torch.Tensor, stack, slot: int) -> torch.Tensor:
    """Out of place: ``steer(h, config, table)`` for the table at ``slot`` of a
    ``steerkit.steering.TableStack``, written for compiled models. It reads the table's rows out
    of the stacked tensors inside the graph, and only the tensors of the kinds the stack has held
    (``SteeringTable.uses``), so every site of a model steered from one stack adds the same few
    graph inputs (at most nine in all, three for vectors only) rather than nine per site: each
    input costs host time on every call of a compiled model. Only metadata is checked; eagerly it
    runs the reference (use ``steer_`` with the table there)."""
    C.activation("steer_stacked", h)
    if stack.d != h.shape[-1]:
        C.fail("steer_stacked", "stack", f"steers rows of width {stack.d} but h has d = {h.shape[-1]}")
    if stack.device != h.device:
        C.fail("steer_stacked", "stack", f"is on {stack.device} but h is on {h.device}")
    if config.dtype != torch.int32:
        C.fail("steer_stacked", "config", f"must be int32, got {config.dtype}")
    if not 0 <= slot < stack.n:
        C.fail("steer_stacked", "slot", f"must be in 0..{stack.n - 1}, got {slot}")
    uses = _uses(stack._uses)
    scale, dyn, dirs, vec = uses[0] or uses[1], uses[1], uses[2] > 0, uses[3]
    needed = (scale, True, dyn, dyn, dirs, dirs, dirs, vec, vec)  # per tensor, in TABLE_TENSORS' order
    parts = [getattr(stack, name)[slot] if need else None for name, need in zip(reference.TABLE_TENSORS, needed)]
    return reference.steer_uses(h, config, *parts, uses=uses)
