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


def _idle(hook) -> bool:
    """A Triton launch hook that calls nothing (None, or a hook chain with no calls)."""
    return hook is None or (type(hook).__name__ == "HookChain" and not hook.calls)


class Prepared:
    """A compiled Triton launch repeated on rows at another address (eager decode: one kernel per
    layer with the same table, config and shapes). Triton's generic launch binds and specialises
    every argument and looks the kernel up on each call, tens of µs of host time; this calls the
    compiled kernel's launcher directly, with every argument but the row pointer fixed. The other
    pointer arguments are passed as addresses, so the caller keeps those tensors alive and
    unchanged. ``make`` returns None where there is no compiled launcher (the interpreter, or a
    Triton whose compiled kernels lack one); a call returns False, launching nothing, where the
    kernel's specialisation would not hold (a row pointer of another alignment, another device)
    or a launch hook is installed (profilers), so the caller takes the generic path."""

    def __init__(self, kernel, grid, args, x_index, device):
        self.run, self.function, self.packed = kernel.run, kernel.function, kernel.packed_metadata
        self.grid = tuple(grid) + (1,) * (3 - len(grid))
        self.head = tuple(a.data_ptr() if hasattr(a, "data_ptr") else a for a in args[:x_index])
        self.tail = tuple(a.data_ptr() if hasattr(a, "data_ptr") else a for a in args[x_index + 2:])
        self.aligned = args[x_index].data_ptr() % 16 == 0  # Triton specialises pointers on this
        self.device = device
        from triton import knobs
        from triton.runtime import driver

        self.hooks, self.stream = knobs.runtime, driver.active.get_current_stream

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
        p = x.data_ptr()
        if (self.aligned and p % 16) or not (_idle(self.hooks.launch_enter_hook) and _idle(self.hooks.launch_exit_hook)):
            return False
        if torch.cuda.current_device() != self.device:
            return False
        gx, gy, gz = self.grid
        self.run(gx, gy, gz, self.stream(self.device), self.function, self.packed, None, None, None,
                 *self.head, p, p, *self.tail)
        return True
