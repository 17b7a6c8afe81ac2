"""Test setup: on a machine without a GPU the Triton kernels run in the interpreter on CPU
tensors (TRITON_INTERPRET must be set before Triton is imported)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# tests choose backends explicitly (a backend forced for the whole process would fail the CPU models)
os.environ.pop("STEERKIT_BACKEND", None)

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
