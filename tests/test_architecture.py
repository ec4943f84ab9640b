"""The layout stays true: a wing never imports a wing above it (docs/architecture.md).

Every import counts, also those inside functions: a lazy import is still a dependency."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "wildreid"

# Bottom to top. A module may import its own wing and any wing listed before it.
WINGS = ["util", "data", "local", "describe", "presets", "decide", "catalog", "gallery", "evaluate", "train"]
WINGS += ["review", "web", "cli"]
# Wings that a wing must not import although they are below it: the catalogue is storage only and
# loads no model (`wildreid catalog info` must not pay for torch), and the pipeline (gallery,
# evaluation, training) works on any dataset, with or without a catalogue.
FORBIDDEN = {"catalog": {"local", "describe"}, "gallery": {"catalog"}, "evaluate": {"catalog"}, "train": {"catalog"}}


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "wildreid" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in WINGS else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}:{node.lineno}: relative import; write wildreid.<wing>.<module>")
            found += [(node.lineno, node.module or "")]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_every_module_is_in_a_wing():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py", "presets.py")]
    assert loose == [], f"modules outside every wing: {loose}; move each into the wing of its stage"
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert set(folders) <= set(WINGS), f"wings not in the rule: {set(folders) - set(WINGS)}"


def test_no_wing_imports_a_wing_above_it():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        own = wing_of(".".join(relative.parts))
        if own is None:
            continue
        for line, target in imports_of(path):
            other = wing_of(target)
            if other is not None and WINGS.index(other) > WINGS.index(own):
                violations.append(f"{relative}.py:{line} ({own}) imports {target} ({other})")
            if other in FORBIDDEN.get(own, ()):
                violations.append(f"{relative}.py:{line} ({own}) imports {target} ({other}, forbidden to {own})")
    assert violations == [], "upward imports:\n" + "\n".join(sorted(set(violations)))


def test_the_rule_catches_an_upward_import(tmp_path):
    """The check itself can fail: an import of gallery from data is reported."""
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from wildreid.gallery.gallery import Gallery\n")
    assert (2, "wildreid.gallery.gallery") in imports_of(module)
    assert WINGS.index(wing_of("wildreid.gallery.gallery")) > WINGS.index("data")


@pytest.mark.parametrize("command", [["catalog", "info", "--help"]])
def test_catalog_commands_do_not_load_torch(command):
    """`wildreid catalog info` reads a SQLite file: it must not pay for (or need) torch."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from wildreid.cli.main import app\n"
        f"CliRunner().invoke(app, {command!r})\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


# What `wildreid --help` must not load: they cost most of a second together (BENCHMARKS.md,
# "Command-line start"), and no command needs them before it runs. numpy is still loaded (the
# local methods' registry, which the help lists, imports it).
HEAVY = ("pandas", "cv2", "torch", "pyarrow", "scipy", "sklearn", "faiss", "timm")


def test_the_command_line_loads_no_heavy_library_for_its_help():
    """Importing the CLI, and every command's and group's --help, loads none of HEAVY: commands
    import them inside their bodies, and presets read only light modules."""
    code = (
        "import sys\n"
        "import wildreid.cli.main\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
        "from typer.main import get_command\n"
        "from typer.testing import CliRunner\n"
        "from wildreid.cli.main import app\n"
        "root = get_command(app)\n"
        "commands = [[name] for name in root.commands]\n"
        "commands += [[name, sub] for name, group in root.commands.items() for sub in getattr(group, 'commands', {})]\n"
        "for command in [[]] + commands:\n"
        "    result = CliRunner().invoke(app, command + ['--help'])\n"
        "    assert result.exit_code == 0, (command, result.output)\n"
        "print(len(commands))\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    on_import, commands, after_help = out.stdout.strip().splitlines()[-3:]
    assert on_import == "[]", out.stdout
    assert int(commands) > 10  # every command and sub-command was asked for its help
    assert after_help == "[]", out.stdout
