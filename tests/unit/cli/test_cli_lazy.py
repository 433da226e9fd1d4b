"""The top-level command imports command modules on need: ``isobox run``
loads the run flags alone; any other name, ``--help`` or a listing loads all
of them, with the same commands as a full registration."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from isobox.cli import main


def test_every_alone_command_is_the_one_its_module_registers() -> None:
    main.cli.load_all()  # type: ignore[attr-defined]
    for name, module in main.ALONE.items():
        command = main.cli.commands[name]
        assert command.callback is not None
        assert command.callback.__module__ == f"isobox.cli.{module}", name


def test_one_command_loads_its_module_only() -> None:
    group = main.IsoboxGroup("isobox")
    ctx = click.Context(group)
    assert group.get_command(ctx, "run") is not None
    assert group.loaded == {"run"}
    assert "images" not in group.commands and "container" not in group.commands
    assert group.get_command(ctx, "images") is not None  # anything else: everything
    assert group.complete and group.loaded == set(main.MODULES)
    container = group.commands["container"]
    assert isinstance(container, click.Group) and "run" in container.commands


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main.cli, ["--help"])
    assert result.exit_code == 0
    for name in ("run", "images", "volume", "network", "system", "build", "container"):
        assert f"  {name} " in result.output, name


def test_the_run_path_imports_no_other_verbs() -> None:
    code = ("import sys\n"
            "from isobox.cli import main\n"
            "main.cli.get_command(None, 'run')\n"
            "print(sorted(m for m in sys.modules if m.startswith('isobox.cli.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    for heavy in ("images", "fs_cmds", "network_cmds", "build_cmds", "volume_cmds"):
        assert f"isobox.cli.{heavy}'" not in out, out
