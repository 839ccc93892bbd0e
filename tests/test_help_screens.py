"""Every command's --help names what to type, never a Python type placeholder (`<bool>`, `<list[str]>`)."""

from __future__ import annotations

import re

import typer

from conftest import run_cli
from mmner.cli import app

PLACEHOLDER = re.compile(r"<(bool|list\[|path|str|int|float|Path)")


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the app, as argument paths (`()` is `mmner` itself)."""
    paths: list[tuple[str, ...]] = []

    def walk(command, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


def test_every_help_screen_is_free_of_type_placeholders(monkeypatch, capsys):
    paths = _command_paths()
    assert {("train",), ("evaluate",), ("predict",), ("serve",), ("features", "extract")} <= set(paths)
    for path in paths:
        code, out, err = run_cli(monkeypatch, capsys, *path, "--help")
        assert code == 0, (path, err)
        assert "<bool>" not in out and "<list[" not in out, (path, out)
        assert not PLACEHOLDER.search(out), (path, PLACEHOLDER.search(out).group(), out)
        assert "--help" in out


def test_flags_show_no_metavar_and_lists_show_key_value(monkeypatch, capsys):
    _, out, _ = run_cli(monkeypatch, capsys, "train", "--help")
    assert re.search(r"--set\s+KEY=VALUE", out)
    assert re.search(r"--resume\s+Continue", out) and re.search(r"--output\s+-o\s+PATH", out)
    assert "CONFIG" in out
    _, out, _ = run_cli(monkeypatch, capsys, "report", "--help")
    assert "RUN_DIR" in out and re.search(r"--resamples\s+INTEGER", out)
    code, _, err = run_cli(monkeypatch, capsys, "train")
    assert code == 2 and "Missing argument 'CONFIG'" in err
