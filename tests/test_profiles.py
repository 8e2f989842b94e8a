"""Export profiles: the shipped TOML and the in-package defaults agree; bad profiles fail in one line."""

from __future__ import annotations

import dataclasses

import pytest
import tomllib

from vcorner.io.records import InputError
from vcorner.models.profiles import (
    DEFAULT_PROFILE,
    DEFAULT_PROFILES,
    ExportProfile,
    get_profile,
    load_profiles,
    repo_profiles_path,
)


def test_repository_toml_and_package_defaults_agree():
    path = repo_profiles_path()
    assert path.is_file(), "export/profiles.toml missing from the repository"
    assert tomllib.loads(path.read_text(encoding="utf-8")) == DEFAULT_PROFILES


def test_defaults_load_and_the_default_profile_is_fp16_gpu():
    profiles = load_profiles()
    assert set(profiles) == set(DEFAULT_PROFILES)
    gpu = profiles[DEFAULT_PROFILE]
    assert gpu.precision == "fp16" and gpu.batch == (gpu.batch_min, gpu.batch_opt, gpu.batch_max)
    assert all(p.batch_min <= p.batch_opt <= p.batch_max for p in profiles.values())


def test_package_defaults_work_without_the_repository_file(tmp_path, monkeypatch):
    import vcorner.models.profiles as module

    monkeypatch.setattr(module, "repo_profiles_path", lambda: tmp_path / "absent.toml")
    assert load_profiles() == {name: module.make_profile(name, f) for name, f in DEFAULT_PROFILES.items()}


def test_toml_overrides_fields_and_adds_profiles(tmp_path):
    path = tmp_path / "profiles.toml"
    path.write_text('[gpu]\nbatch_max = 2048\nbatch_opt = 1024\n\n'
                    '[edge]\nprecision = "fp16"\nbatch_min = 1\nbatch_opt = 8\nbatch_max = 16\nworkspace_mb = 512\n')
    profiles = load_profiles(path)
    assert profiles["gpu"].batch == (1, 1024, 2048)
    assert profiles["gpu"].workspace_mb == DEFAULT_PROFILES["gpu"]["workspace_mb"]  # untouched field kept
    assert profiles["edge"] == ExportProfile("edge", "fp16", 1, 8, 16, 512)
    assert "cpu" in profiles


def test_profile_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_profile("gpu").batch_max = 1  # type: ignore[misc]


@pytest.mark.parametrize("table, message", [
    ('[gpu]\nbatch_min = 300\n', "batch_min <= batch_opt <= batch_max"),
    ('[gpu]\nbatch_opt = 1024\n', "batch_min <= batch_opt <= batch_max"),
    ('[gpu]\nbatch_min = 0\n', "batch_min must be a positive integer"),
    ('[gpu]\nworkspace_mb = -1\n', "workspace_mb must be a positive integer"),
    ('[gpu]\nbatch_max = true\n', "batch_max must be a positive integer"),
    ('[gpu]\nbatch_max = 2.5\n', "batch_max must be a positive integer"),
    ('[gpu]\nprecision = "int4"\n', "precision must be one of fp32, fp16"),
    ('[gpu]\nbatch = 3\n', "unknown setting(s) batch"),
    ('[new]\nbatch_min = 1\n', "missing setting(s) batch_max, batch_opt, precision, workspace_mb"),
    ('gpu = 3\n', "'gpu' must be a [table]"),
    ('[gpu\n', "not valid TOML"),
])
def test_invalid_profiles_fail_in_one_line_naming_file_and_table(tmp_path, table, message):
    path = tmp_path / "bad.toml"
    path.write_text(table)
    with pytest.raises(InputError) as err:
        load_profiles(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text
    if "[" in table and "must be a [table]" not in message and "TOML" not in message:
        assert "[gpu]" in text or "[new]" in text


def test_missing_file_and_unknown_name_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such export profiles file"):
        load_profiles(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="unknown export profile 'tpu'; known: cpu, gpu, gpu-fp32, gpu-large"):
        get_profile("tpu")


def test_profile_dict_round_trips():
    profile = get_profile("gpu-large")
    assert ExportProfile(**profile.to_dict()) == profile
