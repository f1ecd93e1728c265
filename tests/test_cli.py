"""The `nas-reid` command line: help texts, happy paths, and failing well (exit 2, one message)."""

import json

import pytest
from PIL import Image

from tests.fake_datasets import build_market, market_name, write_image

SMALL = ["--ids", "8", "--cameras", "3", "--images-per-id", "6", "--size", "32x16", "--workers", "1"]


@pytest.mark.parametrize("cmd", [[], ["data"], ["data", "check"], ["data", "synth"], ["data", "sheet"], ["search"],
                                 ["retrain"], ["evaluate"], ["export"], ["tune"], ["genotype"],
                                 ["genotype", "show"], ["genotype", "plot"], ["genotype", "diff"],
                                 ["genotype", "notebooks"]])
def test_every_command_has_help(run, cmd):
    result = run(*cmd, "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_data_check_prints_the_table_and_flags_the_count_mismatch(run, tmp_path):
    build_market(tmp_path)
    result = run("data", "check", "--dataset", "market1501", "--root", tmp_path)
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "gallery" in result.output
    assert "warning" in result.output.lower()  # a fake folder is far from 751/12,936


def test_missing_dataset_folder_is_one_message_and_exit_2(run, tmp_path):
    result = run("data", "check", "--data", "dukemtmc", "--root", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "Error:" in result.output and "nowhere" in result.output
    assert "Traceback" not in result.output


def test_bad_file_name_is_named(run, tmp_path):
    root = build_market(tmp_path)
    write_image(root / "query" / "not_a_reid_name.jpg")
    result = run("data", "check", "--dataset", "market1501", "--root", root)
    assert result.exit_code == 2
    assert "not_a_reid_name.jpg" in result.output


def test_root_is_required_except_for_synthreid(run):
    result = run("data", "check", "--data", "market1501")
    assert result.exit_code == 2 and "--root is required for --data market1501" in result.output


def test_data_commands_take_data_as_every_command_does_and_dataset_still_works(run, tmp_path):
    build_market(tmp_path)
    for flag in ("--data", "--dataset"):
        result = run("data", "check", flag, "market1501", "--root", tmp_path)
        assert result.exit_code == 0 and "train" in result.output, result.output
    for command in ("check", "sheet"):
        shown = run("data", command, "--help").output
        assert "--data " in shown and "--dataset" not in shown


def test_synth_writes_a_market_layout_that_check_reads(run, tmp_path):
    out = tmp_path / "synth"
    result = run("data", "synth", "--out", out, *SMALL, "--seed", "3")
    assert result.exit_code == 0, result.output
    info = json.loads((out / "synthreid.json").read_text())
    assert info["config"]["ids"] == 8 and info["config"]["height"] == 32
    check = run("data", "check", "--dataset", "synthreid", "--root", out)
    assert check.exit_code == 0, check.output
    assert f"{info['counts']['train']['images']:,}" in check.output

    sheet = tmp_path / "sheet.png"
    drawn = run("data", "sheet", "--data", "synthreid", "--root", out, "--out", sheet,
                "--ids", "3", "--per-id", "4")
    assert drawn.exit_code == 0, drawn.output
    with Image.open(sheet) as img:
        assert img.width > 0 and img.height > 0


def test_synth_refuses_a_non_empty_folder_and_leaves_it_alone(run, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run("data", "synth", "--out", out, *SMALL)
    assert result.exit_code == 2 and "not empty" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("args, field", [
    (["--size", "tall"], "--size"),
    (["--cameras", "12"], "cameras"),
    (["--ids", "0"], "ids"),
])
def test_synth_bad_options_name_the_field_and_write_nothing(run, tmp_path, args, field):
    out = tmp_path / "synth"
    result = run("data", "synth", "--out", out, *args)
    assert result.exit_code == 2, result.output
    assert field in result.output and "Traceback" not in result.output
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_synthreid_folder_modified_after_generation_is_rejected(run, tmp_path):
    out = tmp_path / "synth"
    assert run("data", "synth", "--out", out, *SMALL).exit_code == 0
    write_image(out / "query" / market_name(1, 1, 999))
    result = run("data", "check", "--dataset", "synthreid", "--root", out)
    assert result.exit_code == 2 and "manifest" in result.output


@pytest.mark.parametrize("gpu", [False, True])
def test_device_auto_is_the_default_and_takes_the_gpu_with_loader_workers(run, monkeypatch, gpu):
    """--device defaults to auto: cuda when torch sees a GPU (then image loading gets worker
    processes by default), else cpu with none; an explicit --workers always wins."""
    import torch

    import nas_reid.search

    calls = []

    def fake_search(space, data, **kwargs):
        calls.append(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(nas_reid.search, "search", fake_search)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert run("search").exit_code == 0
    assert run("search", "--workers", "0").exit_code == 0
    assert run("search", "--device", "cpu").exit_code == 0
    assert [(c["device"], c["num_workers"]) for c in calls] == (
        [("cuda", 8), ("cuda", 0), ("cpu", 0)] if gpu else [("cpu", 0), ("cpu", 0), ("cpu", 0)])
