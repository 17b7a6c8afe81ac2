"""SteeringTable: persistent per-site tables of steering configurations for the fused op.

All tensors are allocated once, for ``capacity`` configurations plus the reserved configuration
0 (the identity: rows pointing at it are left bit-identical). Setting, replacing and clearing a
configuration writes into those tensors in place, so compiled graphs and captured CUDA graphs
that read them stay valid: change the table or the per-row ``config`` indices between steps,
never the tensors' identity.

A configuration applies to a row x, in this order (see steerkit.ops.reference.steer):
    y = scale * (w . x + b if dynamic else 1) * x
    for each direction u_k:  y = y - (y . u_k - value_k) * u_k     (u_k unit, orthonormal)
    y = y + strength * vector
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from steerkit.ops import _checks as C
from steerkit.ops.reference import FLAG_DYNAMIC, FLAG_VECTOR, TABLE_TENSORS

Number = Union[int, float]
_TENSOR_NAMES = frozenset(TABLE_TENSORS)


class TableStack:
    """The storage of ``n`` steering tables of one width and capacity: each tensor of a table is
    slice ``slot`` of a stacked tensor with a leading dimension n ([n, capacity + 1, ...]), and
    the tables share one record of the kinds of intervention used (``SteeringTable.uses``).

    A model steered at many sites keeps one table per site in one stack. A compiled model then
    reads every site's configuration rows out of the same few stacked tensors (indexing them in
    the graph), instead of taking nine tensors per site as inputs: each graph input costs host
    time on every call (guards, input checks), which in a decode step adds up.
    """

    def __init__(self, n: int, d: int, capacity: int, max_directions: int = 1, *,
                 device: Optional[Union[str, torch.device]] = None, dtype: torch.dtype = torch.float32):
        if n < 1 or d < 1 or capacity < 1 or max_directions < 1:
            raise ValueError(f"SteeringTable: need d >= 1, capacity >= 1, max_directions >= 1 (and n >= 1 "
                             f"tables); got d={d}, capacity={capacity}, max_directions={max_directions}, n={n}")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"SteeringTable: dtype must be float32, float16 or bfloat16, got {dtype}")
        c, r = capacity + 1, max_directions
        f32 = dict(device=device, dtype=torch.float32)
        self.scale = torch.ones(n, c, **f32)
        self.flags = torch.zeros(n, c, device=device, dtype=torch.int32)
        self.dyn_w = torch.zeros(n, c, d, device=device, dtype=dtype)
        self.dyn_b = torch.zeros(n, c, **f32)
        self.dirs = torch.zeros(n, c, r, d, device=device, dtype=dtype)
        self.dir_val = torch.zeros(n, c, r, **f32)
        self.n_dirs = torch.zeros(n, c, device=device, dtype=torch.int32)
        self.vec = torch.zeros(n, c, d, device=device, dtype=dtype)
        self.strength = torch.zeros(n, c, **f32)
        for t in self.tensors():  # updated in place: compiled CUDA graphs read them where they are
            torch._dynamo.mark_static_address(t)
        # plain attributes (not properties), so that compiled code reads them without calls
        self.n, self.d, self.capacity, self.max_directions = n, d, capacity, max_directions
        self.device = self.vec.device
        self._uses = {"scale": False, "dynamic": False, "directions": 0, "vector": False}

    def tensors(self) -> Tuple[torch.Tensor, ...]:
        """The stacked tensors, in SteeringTable.tensors' order."""
        return tuple(getattr(self, name) for name in TABLE_TENSORS)

    def __repr__(self) -> str:
        return (f"TableStack(n={self.n}, d={self.d}, capacity={self.capacity}, "
                f"max_directions={self.max_directions}, device={self.device}, dtype={self.vec.dtype})")


class SteeringTable:
    """Preallocated configurations for ``steerkit.ops.steer_``.

    Args:
        d: width of the rows it steers.
        capacity: number of configurations (ids 1..capacity; 0 is the identity).
        max_directions: direction slots per configuration (R); unused slots are inactive.
        device, dtype: where the tables live; ``dtype`` is that of the vector tables (dynamic-scale
            weights, directions, vectors); scalars are float32.
        stack, slot: live in slot ``slot`` of an existing ``TableStack`` of the same d, capacity
            and max_directions (its device and dtype; see ``stacked``) instead of a stack of one.
    """

    def __init__(self, d: int, capacity: int, max_directions: int = 1, *,
                 device: Optional[Union[str, torch.device]] = None, dtype: torch.dtype = torch.float32,
                 stack: Optional["TableStack"] = None, slot: int = 0):
        if stack is None:
            stack = TableStack(1, d, capacity, max_directions, device=device, dtype=dtype)
        elif (stack.d, stack.capacity, stack.max_directions) != (d, capacity, max_directions) or not 0 <= slot < stack.n:
            raise ValueError(f"SteeringTable: slot {slot} of {stack!r} does not hold a table of d={d}, "
                             f"capacity={capacity}, max_directions={max_directions}")
        self.stack, self.slot = stack, slot
        # views of the stack's tensors (written in place, so they stay where graphs read them)
        (self.scale, self.flags, self.dyn_w, self.dyn_b, self.dirs, self.dir_val, self.n_dirs, self.vec,
         self.strength) = (t[slot] for t in stack.tensors())
        for t in self.tensors():  # a table used on its own in a compiled model is read from these
            torch._dynamo.mark_static_address(t)
        self._used = set()
        self._launches = {}  # ops.steer_'s prepared eager launches for this table, per config tensor
        # kinds of intervention any configuration of the stack has held (never reset): compiled
        # graphs specialise on them; see ``uses``
        self._uses = stack._uses

    @classmethod
    def stacked(cls, n: int, d: int, capacity: int, max_directions: int = 1, *,
                device: Optional[Union[str, torch.device]] = None,
                dtype: torch.dtype = torch.float32) -> List["SteeringTable"]:
        """n tables that live in one ``TableStack`` (one set of tensors for all of them)."""
        stack = TableStack(n, d, capacity, max_directions, device=device, dtype=dtype)
        return [cls(d, capacity, max_directions, stack=stack, slot=s) for s in range(n)]

    # -- shape -------------------------------------------------------------------------------
    @property
    def d(self) -> int:
        return self.vec.shape[1]

    @property
    def capacity(self) -> int:
        return self.scale.shape[0] - 1

    @property
    def max_directions(self) -> int:
        return self.dirs.shape[1]

    @property
    def device(self) -> torch.device:
        return self.vec.device

    def __len__(self) -> int:
        return len(self._used)

    def in_use(self) -> Sequence[int]:
        return sorted(self._used)

    def tensors(self) -> Tuple[torch.Tensor, ...]:
        """The tensors in the order the op and kernels take them (``reference.TABLE_TENSORS``;
        written out, as eager hot paths call this and Dynamo traces it)."""
        return (self.scale, self.flags, self.dyn_w, self.dyn_b, self.dirs, self.dir_val,
                self.n_dirs, self.vec, self.strength)

    def __setattr__(self, name, value):
        # counts replacements of the table's tensors (the contract is to write them in place, but
        # a replaced one must not be missed): launches prepared with the old ones check this count
        if name in _TENSOR_NAMES:
            self.__dict__["_replaced"] = self.__dict__.get("_replaced", 0) + 1
        object.__setattr__(self, name, value)

    @property
    def uses(self) -> Tuple[bool, bool, int, bool]:
        """(scale, dynamic, directions, vector): whether any configuration so far had a scale
        != 1, a dynamic scale, how many direction slots at most, a vector. Compiled models
        specialise their graphs on this, so it only ever grows (clearing does not shrink it).
        Tables of one stack share it (a model's sites are compiled for the same kinds)."""
        u = self._uses
        return (u["scale"], u["dynamic"], u["directions"], u["vector"])

    def expect(self, *, scale: bool = False, dynamic: bool = False, directions: int = 0,
               vector: bool = False) -> None:
        """Declare kinds of intervention that will be used later, so that a compiled model is
        compiled for them up front and never recompiles when they first appear."""
        if not 0 <= directions <= self.max_directions:
            raise ValueError(f"SteeringTable.expect: directions must be in 0..{self.max_directions}")
        u = self._uses
        u["scale"] |= bool(scale)
        u["dynamic"] |= bool(dynamic)
        u["directions"] = max(u["directions"], int(directions))
        u["vector"] |= bool(vector)

    # -- writing -----------------------------------------------------------------------------
    def _slot(self, i: int) -> int:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"SteeringTable: configuration id must be an int, got {type(i).__name__}")
        if not 1 <= i <= self.capacity:
            raise IndexError(f"SteeringTable: configuration id {i} is outside 1..{self.capacity} "
                             f"(0 is the reserved identity)")
        return i

    def set(self, i: int, *, scale: Number = 1.0, dynamic: Optional[Tuple[torch.Tensor, Number]] = None,
            directions: Optional[torch.Tensor] = None, values: Union[Number, torch.Tensor] = 0.0,
            vector: Optional[torch.Tensor] = None, strength: Number = 1.0) -> int:
        """Set (or replace) configuration ``i`` entirely; everything not given is the identity.

        scale: the factor c. dynamic: ``(w, b)`` with w of shape [d] for the factor ``w . x + b``.
        directions: [d] or [r, d] (r <= max_directions), normalised here, orthonormal rows.
        values: the target component along each direction (number or [r]; 0 = ablation).
        vector, strength: add ``strength * vector`` ([d]). Returns i.
        """
        i = self._slot(i)
        op, d = "SteeringTable.set", self.d
        probe = self.vec[:1]  # for device / shape checks
        C.row_param(op, "scale", scale, probe[0, :1], True)
        C.row_param(op, "strength", strength, probe[0, :1], True)
        w = b = None
        if dynamic is not None:
            if not (isinstance(dynamic, (tuple, list)) and len(dynamic) == 2):
                C.fail(op, "dynamic", "must be a pair (w, b) with w of shape [d]")
            w, b = dynamic
            C.vector(op, "dynamic[0]", w.to(self.device), probe, [d], True)
            C.row_param(op, "dynamic[1]", b, probe[0, :1], True)
        units, vals = None, None
        if directions is not None:
            u = directions.to(self.device)
            C.vector(op, "directions", u, probe, [d] if u.dim() == 1 else [-1, d], True)
            C.directions(op, "directions", u, True)
            units = u.double().reshape(-1, d)
            units = units / units.norm(dim=-1, keepdim=True)
            if units.shape[0] > self.max_directions:
                C.fail(op, "directions", f"has {units.shape[0]} rows but the table holds at most "
                                         f"{self.max_directions} (max_directions)")
            r = units.shape[0]
            if isinstance(values, torch.Tensor):
                vals = values.to(self.device, torch.float32).reshape(-1)
                if vals.numel() != r:
                    C.fail(op, "values", f"must have {r} entries (one per direction), got {vals.numel()}")
                C.finite(op, "values", vals)
            else:
                C.row_param(op, "values", values, probe[0, :1], True)
                vals = torch.full((r,), float(values), device=self.device)
        if vector is not None:
            C.vector(op, "vector", vector.to(self.device), probe, [d], True)

        with torch.no_grad():
            self._reset(i)
            self.scale[i] = float(scale)
            flags = 0
            if w is not None:
                self.dyn_w[i].copy_(w)
                self.dyn_b[i] = float(b)
                flags |= FLAG_DYNAMIC
            if units is not None:
                r = units.shape[0]
                self.dirs[i, :r].copy_(units)
                self.dir_val[i, :r].copy_(vals)
                self.n_dirs[i] = r
            if vector is not None:
                self.vec[i].copy_(vector)
                self.strength[i] = float(strength)
                flags |= FLAG_VECTOR
            self.flags[i] = flags
        self._used.add(i)
        self.expect(scale=float(scale) != 1.0, dynamic=w is not None,
                    directions=0 if units is None else units.shape[0], vector=vector is not None)
        return i

    def add(self, **config) -> int:
        """Store a configuration in the first free slot and return its id (see ``set``)."""
        free = next((i for i in range(1, self.capacity + 1) if i not in self._used), None)
        if free is None:
            raise RuntimeError(f"SteeringTable: all {self.capacity} configurations are in use; "
                               f"clear one or make a larger table")
        return self.set(free, **config)

    def set_strength(self, i: int, strength: Number) -> None:
        """Change only the strength of configuration i's vector (cheap: one scalar write)."""
        C.row_param("SteeringTable.set_strength", "strength", strength, self.vec[0, :1], True)
        with torch.no_grad():
            self.strength[self._slot(i)] = float(strength)

    def set_scale(self, i: int, scale: Number) -> None:
        """Change only the scale factor of configuration i."""
        C.row_param("SteeringTable.set_scale", "scale", scale, self.vec[0, :1], True)
        with torch.no_grad():
            self.scale[self._slot(i)] = float(scale)
        self.expect(scale=float(scale) != 1.0)

    def clear(self, i: int) -> None:
        """Make configuration i the identity again and free its slot."""
        with torch.no_grad():
            self._reset(self._slot(i))
        self._used.discard(i)

    def _reset(self, i: int) -> None:
        self.scale[i] = 1.0
        self.flags[i] = 0
        self.dyn_w[i].zero_()
        self.dyn_b[i] = 0.0
        self.dirs[i].zero_()
        self.dir_val[i].zero_()
        self.n_dirs[i] = 0
        self.vec[i].zero_()
        self.strength[i] = 0.0

    def __repr__(self) -> str:
        return (f"SteeringTable(d={self.d}, capacity={self.capacity}, max_directions={self.max_directions}, "
                f"in_use={len(self)}, device={self.device}, dtype={self.vec.dtype})")
