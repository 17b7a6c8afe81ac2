"""Launch heuristics shared by the Triton kernels, in plain sight.

Two kernel shapes:
- elementwise ops (scale, add, add_gathered, patch) tile the [T, d] matrix into
  [BLOCK_T, BLOCK_D] blocks on a 2-D grid; no reduction, so no block needs a whole row;
- reduction ops (project_out, steer) keep whole rows in registers: BLOCK_D = next_pow2(d), so one
  read and one write of each row (dot products first, then the update).
On a GPU a block holds ~4k elements (enough 16-byte loads in flight per SM to reach the copy
bandwidth). Under TRITON_INTERPRET=1 (CPU tests) time grows with programs x block ops, so blocks
are made as large as possible there.
"""
import os
from typing import Optional

import torch
import triton

MAX_D = 32768  # whole-row kernels keep the row in registers; wider rows go to another backend


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _warps(elems: int) -> int:
    return 4 if elems <= 2048 else 8 if elems <= 8192 else 16


def elementwise_config(T: int, d: int):
    """(BLOCK_T, BLOCK_D, num_warps) for the 2-D elementwise grid.

    GPU: [16, 256] tiles (256 divides the common model widths, so no lanes idle; 16 rows of
    512 contiguous bytes each in bf16). Interpreter: whole rows, as many as fit 64k elements.
    """
    if interpreting():
        block_d = triton.next_power_of_2(d)
        block_t = max(1, min((1 << 16) // block_d, triton.next_power_of_2(max(T, 1))))
        return block_t, block_d, 4
    block_d = min(triton.next_power_of_2(d), 256)
    block_t = max(1, min(4096 // block_d, triton.next_power_of_2(max(T, 1))))
    return block_t, block_d, _warps(block_t * block_d)


def row_config(T: int, d: int):
    """(BLOCK_T, BLOCK_D, num_warps) for whole-row kernels (BLOCK_D covers d)."""
    block_d = triton.next_power_of_2(d)
    budget = 1 << 16 if interpreting() else 4096
    block_t = max(1, min(budget // block_d, triton.next_power_of_2(max(T, 1))))
    return block_t, block_d, _warps(block_t * block_d)


def row_loop_config(T: int, d: int):
    """(ROWS, BLOCK_D, num_warps) for kernels that walk rows one at a time (steer): one row per
    program on a GPU (many programs hide latency); long loops in the interpreter (few programs)."""
    block_d = triton.next_power_of_2(d)
    rows = max(1, min(T, 256)) if interpreting() else 1
    return rows, block_d, _warps(block_d)


# In place, rows that an op leaves untouched are never written. Their reads are skipped too when
# T is large (bandwidth-bound: unsteered rows cost nothing); at decode sizes the row is read
# unconditionally instead, so its load does not wait for the index load (latency-bound).
SKIP_READ_MIN_T = 256


def skip_untouched_reads(T: int, in_place: bool) -> bool:
    return in_place and T >= SKIP_READ_MIN_T


class Prepared:
    """A compiled Triton launch repeated on rows at another address (eager decode: one kernel per
    layer with the same table, config and shapes). Triton's generic launch binds and specialises
    every argument and looks the kernel up on each call, tens of µs of host time; this calls the
    compiled kernel's launcher directly, with every argument but the row pointer fixed. The other
    pointer arguments are passed as addresses, so the caller keeps those tensors alive and
    unchanged. ``make`` returns None where there is no compiled launcher (the interpreter, or a
    Triton whose compiled kernels lack one); a call returns False, launching nothing, where the
    kernel's specialisation would not hold (a row pointer of another alignment, another current
    device) or a launch hook is installed (profilers), so the caller takes the generic path."""

    def __init__(self, kernel, grid, args, x_index, device):
        r = Repeat(kernel, device)
        self.knobs, self.enter, self.exit = r.knobs, r.enter, r.exit
        head = tuple(a.data_ptr() if hasattr(a, "data_ptr") else a for a in args[:x_index])
        tail = tuple(a.data_ptr() if hasattr(a, "data_ptr") else a for a in args[x_index + 2:])
        grid = tuple(grid) + (1,) * (3 - len(grid))
        self.launch = r.launch
        self.head, self.tail = grid + (None,) + r.mid + head, tail  # head[3]: the stream, filled in per call
        self.aligned = args[x_index].data_ptr() % 16 == 0  # Triton specialises pointers on this
        self.device = device
        self.stream, self.get_device = r.stream, r.get_device

    @classmethod
    def make(cls, kernel, grid, args, x_index: int = 0) -> Optional["Prepared"]:
        """``args``: the kernel's arguments in parameter order, constexprs included, with the row
        tensor at ``x_index`` and the output (the same tensor, in place) right after it."""
        if interpreting() or not all(hasattr(kernel, a) for a in ("run", "function", "packed_metadata")):
            return None
        x = args[x_index]
        if args[x_index + 1] is not x or not x.is_cuda:
            return None
        try:
            return cls(kernel, grid, args, x_index, x.device.index)
        except Exception:  # another Triton's internals: the generic path still works
            return None

    def __call__(self, x) -> bool:
        """Launch on x (shaped, strided and typed like the prepared rows); False if not done."""
        return self.bound()(x)

    def bound(self):
        """``self.__call__`` as a plain closure over the fixed arguments, made once: no method
        dispatch, attribute lookups or argument slicing per call (inside an eager decode step each
        of those costs more than in a warm loop: README, "Eager decode")."""
        go = self.__dict__.get("_go")
        if go is None:
            launch, stream, get_device, device = self.launch, self.stream, self.get_device, self.device
            g0, g1, g2 = self.head[:3]
            mid, tail = self.head[4:], self.tail
            knobs, enter, exit_ = self.knobs, self.enter, self.exit
            mask = 15 if self.aligned else 0  # Triton specialised the row pointer on 16-byte alignment

            def go(x) -> bool:
                p = x.data_ptr()
                if (p & mask or knobs.launch_enter_hook is not enter or enter.calls
                        or knobs.launch_exit_hook is not exit_ or exit_.calls or get_device() != device):
                    return False
                launch(g0, g1, g2, stream(device), *mid, p, p, *tail)
                return True
            self._go = go
        return go


class Repeat:
    """The compiled launch of a Triton kernel, repeated with other values of the arguments it
    was not specialised on (``do_not_specialize`` / ``do_not_specialize_on_alignment``, or the
    very same values): a loop launching one kernel many times skips Triton's generic launch path
    (argument binding, specialisation, cache lookup: tens of µs of host time per launch).
    ``make`` returns None where there is no compiled launcher (the interpreter, another Triton's
    internals); a call returns False, launching nothing, while a launch hook is installed or
    another device is current, so the caller takes the generic path."""

    def __init__(self, kernel, device):
        from triton import knobs
        from triton.runtime import driver

        self.knobs = knobs.runtime
        self.enter, self.exit = self.knobs.launch_enter_hook, self.knobs.launch_exit_hook
        if not (hasattr(self.enter, "calls") and hasattr(self.exit, "calls")):
            raise TypeError("launch hooks are not hook chains")  # a Triton this was not written for
        run = kernel.run
        if _direct(run):  # the C launch function itself, past the launcher's Python wrapper
            self.launch = run.launch
            self.mid = (kernel.function, run.launch_cooperative_grid, run.launch_pdl, None, None,
                        kernel.packed_metadata, None, None, None)
        else:
            self.launch = run
            self.mid = (kernel.function, kernel.packed_metadata, None, None, None)
        self.device = device
        self.stream = driver.active.get_current_stream
        self.get_device = getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device)

    @classmethod
    def make(cls, kernel, device) -> Optional["Repeat"]:
        if interpreting() or not all(hasattr(kernel, a) for a in ("run", "function", "packed_metadata")):
            return None
        try:
            return cls(kernel, device.index if isinstance(device, torch.device) else device)
        except Exception:  # another Triton's internals: the generic path still works
            return None

    def __call__(self, grid, args) -> bool:
        """Launch on ``grid`` with ``args``: every kernel argument in parameter order, constexprs
        included (as the generic launch takes them)."""
        k = self.knobs
        if (k.launch_enter_hook is not self.enter or self.enter.calls or k.launch_exit_hook is not self.exit
                or self.exit.calls or self.get_device() != self.device):
            return False
        g = tuple(grid) + (1,) * (3 - len(grid))
        self.launch(g[0], g[1], g[2], self.stream(self.device), *self.mid, *args)
        return True


def _direct(launcher) -> bool:
    """Whether the compiled launcher's C function can be called past its Python wrapper: Triton
    3.5 and 3.6's CudaLauncher, with no scratch memory to allocate per launch (that wrapper's
    only work then is to pass two Nones)."""
    import triton

    return (type(launcher).__name__ == "CudaLauncher" and triton.__version__.split(".")[:2] in (["3", "5"], ["3", "6"])
            and getattr(launcher, "global_scratch_size", 1) == 0 and getattr(launcher, "profile_scratch_size", 1) == 0
            and hasattr(launcher, "launch_cooperative_grid") and hasattr(launcher, "launch_pdl"))
