"""``mmgen.device``: the device flag, the environment record and the deterministic mode."""

from __future__ import annotations

import json
import os

import pytest
import torch

from mmgen.device import deterministic, environment, resolve_device
from mmgen.errors import UsageError


def flags() -> tuple[bool, bool, bool, bool]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )


def test_deterministic_switches_everything_and_restores_it(monkeypatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = flags()
    with pytest.raises(RuntimeError, match="inside"), deterministic():
        assert flags() == (True, False, False, False)
        assert environment()["deterministic"] is True
        assert environment()["cudnn_tf32"] is False
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        raise RuntimeError("inside")  # restored on the way out of an error too
    assert flags() == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_deterministic_keeps_the_users_cublas_setting(monkeypatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic():
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_deterministic_off_changes_nothing() -> None:
    before = flags()
    with deterministic(False):
        assert flags() == before


def test_environment_is_a_plain_json_record() -> None:
    record = environment("cpu")
    assert json.loads(json.dumps(record)) == record
    assert record["device"] == "cpu" and record["torch"] == torch.__version__
    assert record["cuda"] == (torch.version.cuda or "")


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(UsageError, match="choose one of auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda")
