"""Choosing a device and seeding."""

from __future__ import annotations

import random

import pytest
import torch

from course_lib.device import pick_device, seed_everything


def test_cpu_is_always_available():
    assert pick_device("cpu") == torch.device("cpu")


def test_auto_falls_back_to_what_exists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("course_lib.device._mps_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cpu")


def test_unknown_or_unavailable_devices_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        pick_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        pick_device("cuda:0")


def test_seeding_makes_every_generator_repeat():
    generator = seed_everything(7)
    first = (random.random(), torch.rand(3), torch.rand(2, generator=generator))
    generator = seed_everything(7)
    second = (random.random(), torch.rand(3), torch.rand(2, generator=generator))
    assert first[0] == second[0]
    assert torch.equal(first[1], second[1]) and torch.equal(first[2], second[2])


def test_negative_seed_is_refused():
    with pytest.raises(ValueError, match="non-negative integer"):
        seed_everything(-1)
