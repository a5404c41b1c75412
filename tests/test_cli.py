"""The ``xswarm`` command layer: lazy start-up, one module per subcommand, thin commands."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from xswarm import cli

OPS = Path(cli.__file__).parent / "ops"
OPERATIONS = {"install", "doctor", "status", "backup", "upgrade", "rollback", "reloadctl"}


def test_importing_the_cli_loads_no_heavy_library() -> None:
    """`xswarm --version` and every operator command start without torch, Textual or aiohttp."""
    script = (
        "import sys, xswarm.cli\n"
        "heavy = {'torch', 'moshi', 'textual', 'aiohttp', 'numpy'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_every_subcommand_is_its_own_module_in_xswarm_commands() -> None:
    for name in cli.SUBCOMMANDS:
        command = importlib.import_module(f"xswarm.commands.{name}").command
        assert isinstance(command, click.Command) and command.name == name


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(cli.cli, ["--help"])
    assert result.exit_code == 0, result.output
    lines = result.output.split("Commands:", 1)[1].strip().splitlines()
    assert [line.split()[0] for line in lines] == sorted(cli.SUBCOMMANDS)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_ops_is_a_library_whose_operations_do_not_use_each_other() -> None:
    """The commands live in xswarm.commands; ops never speaks click, and facts one operation
    needs from another's domain come from a shared module (inventory, releases, rolling)."""
    for path in sorted(OPS.glob("*.py")):
        imported = _imports(path)
        assert not {name for name in imported if name.split(".")[0] == "click"}, path.name
        others = {f"xswarm.ops.{op}" for op in OPERATIONS - {path.stem}} & imported
        if path.stem == "rolling":
            others -= {"xswarm.ops.install"}  # its unit writer, shared by upgrade and rollback
        assert not others, f"{path.name} imports {sorted(others)}"
