"""One registry for every steerkit op: ``torch.library`` schemas, backend impls, fake impls, autograd.

Each op ``<name>`` is defined twice in the ``steerkit`` namespace:
  ``steerkit::<name>_(Tensor(a!) h, <params>, str backend) -> ()``   in place
  ``steerkit::<name>(Tensor h, <params>, str backend) -> Tensor``      out of place (differentiable)
``backend`` is already resolved ("torch", "triton" or "cuda") by the Python wrapper, so the op
itself never makes a policy decision. The fast backends run on a 2-D row view of ``h``; a layout
that cannot be viewed as rows with unit stride is copied (and copied back for in-place calls).

Under ``torch.compile`` the Python wrappers call the reference directly, so Inductor sees plain
PyTorch and fuses it with neighbouring kernels (an opaque op would block that fusion).
Gradients of the out-of-place ops are computed by differentiating the reference on the saved
inputs: exact, whatever backend ran the forward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch

from ._backend import resolve

_lib = torch.library.Library("steerkit", "DEF")


@dataclass(frozen=True)
class OpDef:
    name: str
    reference: Callable  # reference(h, *params) -> new tensor
    prepare: Callable  # prepare(x2d, *params) -> params for the fast launchers
    inplace: object = None  # torch.ops.steerkit.<name>_.default
    outplace: object = None  # torch.ops.steerkit.<name>.default


OPS: Dict[str, OpDef] = {}


def _rows(t: torch.Tensor) -> Optional[torch.Tensor]:
    """A [T, d] view of t with unit column stride, sharing memory; None if there is none."""
    d = t.shape[-1]
    try:
        v = t.view(-1, d)
    except RuntimeError:
        return None
    return v if (v.stride(1) == 1 or d == 1) else None


_LAUNCHERS: Dict[tuple, Callable] = {}


def _launcher(backend: str, name: str) -> Callable:
    """The fast backend's launcher for op ``name`` (loaded once, then cached)."""
    fn = _LAUNCHERS.get((backend, name))
    if fn is not None:
        return fn
    if backend == "triton":
        import steerkit.kernels as K

        fn = getattr(K, name)
    elif backend == "cuda":
        from steerkit import _cuda_ext

        _cuda_ext.load()
        fn = getattr(torch.ops.steerkit_cuda, name).default
    else:
        raise ValueError(f"unknown backend {backend!r}")
    _LAUNCHERS[(backend, name)] = fn
    return fn


# bump_versions((t, ...)): record in-place writes done behind the dispatcher's back (autograd's
# version counters); the C entry point itself where torch has one (hot paths call it directly)
bump_versions = getattr(torch._C, "_increment_version", None) or (
    lambda ts: [torch.autograd.graph.increment_version(t) for t in ts])


def _run(op: OpDef, h: torch.Tensor, out: torch.Tensor, params: Sequence, backend: str) -> None:
    """Compute op(h, *params) into out (out is h for in-place)."""
    if backend == "torch":
        out.copy_(op.reference(h, *params))
        return
    launch = _launcher(backend, op.name)
    d = h.shape[-1]
    x2 = _rows(h)
    if out is h:
        if x2 is None:  # no row view: work on a contiguous copy, then write it back
            tmp = h.contiguous().view(-1, d)
            launch(tmp, tmp, *op.prepare(tmp, *params))
            h.copy_(tmp.view(h.shape))
        else:
            launch(x2, x2, *op.prepare(x2, *params))
        return
    if x2 is None:
        x2 = h.contiguous().view(-1, d)
    launch(x2, out.view(-1, d), *op.prepare(x2, *params))


def register(name: str, params_schema: str, reference: Callable, prepare: Callable) -> None:
    """Define steerkit::<name>_ and steerkit::<name> with impls, fake impls and autograd."""
    _lib.define(f"{name}_(Tensor(a!) h, {params_schema}, str backend) -> ()")
    _lib.define(f"{name}(Tensor h, {params_schema}, str backend) -> Tensor")
    op = OpDef(name, reference, prepare)

    def inplace_impl(h, *args):
        _run(op, h, h, args[:-1], args[-1])

    def outplace_impl(h, *args):
        out = h.new_empty(h.shape)
        _run(op, h, out, args[:-1], args[-1])
        return out

    for key in ("CPU", "CUDA"):
        _lib.impl(f"{name}_", inplace_impl, key)
        _lib.impl(name, outplace_impl, key)

    torch.library.register_fake(f"steerkit::{name}_", lambda h, *args: None, lib=_lib)
    torch.library.register_fake(f"steerkit::{name}", lambda h, *args: h.new_empty(h.shape), lib=_lib)

    def setup_context(ctx, inputs, output):
        is_t = [isinstance(a, torch.Tensor) for a in inputs]
        ctx.is_tensor = is_t
        ctx.others = [None if t else a for t, a in zip(is_t, inputs)]
        ctx.save_for_backward(*[a for t, a in zip(is_t, inputs) if t])

    def backward(ctx, grad):
        saved = iter(ctx.saved_tensors)
        args = [next(saved) if t else o for t, o in zip(ctx.is_tensor, ctx.others)]
        wants = [i for i, a in enumerate(args)
                 if ctx.needs_input_grad[i] and isinstance(a, torch.Tensor) and a.is_floating_point()]
        grads = [None] * len(args)
        if wants:
            with torch.enable_grad():
                leaves = list(args)
                for i in wants:
                    leaves[i] = args[i].detach().requires_grad_(True)
                y = reference(*leaves[:-1])  # the last input is the backend name
                got = torch.autograd.grad(y, [leaves[i] for i in wants], grad, allow_unused=True)
            for i, g in zip(wants, got):
                grads[i] = g
        return tuple(grads)

    torch.library.register_autograd(f"steerkit::{name}", backward, setup_context=setup_context, lib=_lib)
    OPS[name] = OpDef(name, reference, prepare,
                      getattr(torch.ops.steerkit, f"{name}_").default,
                      getattr(torch.ops.steerkit, name).default)


def call(name: str, inplace: bool, h: torch.Tensor, params: Sequence, backend: Optional[str],
         compiled_reference: Optional[Tuple[Callable, dict]] = None) -> torch.Tensor:
    """Run op ``name`` on h (checked already) with the chosen backend; returns h or the new tensor.
    Under torch.compile the op is its reference, or ``compiled_reference = (fn, kwargs)``, an
    equivalent specialisation: plain PyTorch that Inductor fuses into the surrounding graph."""
    op = OPS[name]
    if torch.compiler.is_compiling():
        if compiled_reference is None:
            y = op.reference(h, *params)
        else:
            fn, kw = compiled_reference
            y = fn(h, *params, **kw)
        if inplace:
            h.copy_(y)
            return h
        return y
    b = resolve(name, h, backend)
    if inplace and b != "torch" and not torch.is_grad_enabled() and type(h) is torch.Tensor:
        # no autograd, no tensor subclass: skip the dispatcher (tens of µs per call in eager decode)
        _run(op, h, h, params, b)
        bump_versions((h,))
        return h
    if inplace:
        op.inplace(h, *params, b)
        return h
    return op.outplace(h, *params, b)


class FastLaunch:
    """``run(h) -> bool``: op ``name`` in place on h, the backend resolved and the parameters
    prepared once, for repeated eager calls on same-shaped rows (a hook applying one table at
    every layer of a decode step). On Triton, an op with a ``prepare_<name>`` launcher also
    gets its compiled launch prepared on the first call (``kernels._launch.Prepared``), which
    skips Triton's generic launch path afterwards. False: nothing done (no row view of h)."""

    def __init__(self, launch: Callable, args: tuple, prepare: Optional[Callable]):
        self.launch, self.args, self.prepare = launch, args, prepare
        self.prepared = None  # the Prepared launch; False once preparing gave none

    def __call__(self, h: torch.Tensor) -> bool:
        p = self.prepared
        if not (p and h.is_contiguous() and p(h)):
            x2 = _rows(h)
            if x2 is None:
                return False
            if p is None and self.prepare is not None and h.is_contiguous():
                self.prepared = self.prepare(x2, *self.args) or False  # runs the op too
            else:
                self.launch(x2, x2, *self.args)
        bump_versions((h,))
        return True

    def direct(self) -> Optional[Callable]:
        """``launch(h) -> bool`` for a caller that checks itself that h is contiguous and shaped,
        typed and placed like the prepared rows, and bumps h's version itself (one call less per
        launch): the prepared Triton launch, or the op's launcher on h's rows; None while the
        Triton launch is still to be prepared (the next ``__call__`` prepares it)."""
        p = self.prepared
        if p:
            return p.bound()
        if p is None and self.prepare is not None:
            return None
        launch, args = self.launch, self.args

        def run(h):
            x2 = h.view(-1, h.shape[-1])
            launch(x2, x2, *args)
            return True
        return run


def inplace_launch(name: str, h: torch.Tensor, params: Sequence, backend: Optional[str]) -> Optional[FastLaunch]:
    """The ``FastLaunch`` of op ``name`` with these parameters for rows shaped like h; None where
    the fast path does not apply (compiling, autograd, a tensor subclass, the torch backend, or
    parameters the kernels take as converted copies: later writes to the originals would not
    reach a kept copy). ``params`` and the op's prepared arguments are in the same order."""
    if torch.compiler.is_compiling() or torch.is_grad_enabled() or type(h) is not torch.Tensor:
        return None
    b = resolve(name, h, backend)
    x2 = _rows(h)
    if b == "torch" or x2 is None:
        return None
    args = tuple(OPS[name].prepare(x2, *params))
    if any(isinstance(a, torch.Tensor) and a.data_ptr() != p.data_ptr() for a, p in zip(args, params)):
        return None  # a parameter was converted or copied for the kernels: a copy kept would go stale
    prepare = None
    if b == "triton":
        import steerkit.kernels as K

        prepare = getattr(K, f"prepare_{name}", None)
    return FastLaunch(_launcher(b, name), args, prepare)


def vector_for_kernels(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Vectors go to the kernels contiguous, in float32 or in x's dtype."""
    if v.dtype not in (torch.float32, x.dtype):
        v = v.float()
    return v.contiguous()


def rows_for_kernels(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[n, d] parameter rows in float32 or x's dtype with unit column stride (any row stride)."""
    if t.dtype not in (torch.float32, x.dtype):
        t = t.float()
    return t if t.stride(-1) == 1 else t.contiguous()


def per_row(p: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Per-row parameter as contiguous [T] float32 (None stays None)."""
    return None if p is None else p.reshape(-1).to(torch.float32).contiguous()
