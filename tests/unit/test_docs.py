"""The documentation stays true to the code.

- Every citation of a guide in the code (``docs/design.md, "Rotation"``) names a heading that
  exists, and no comment points at a design document outside the repository.
- Every relative link between README.md and docs/*.md reaches a file and a heading.
- The configuration table of docs/operators.md is checked against ``Settings``: every
  setting, its ``AUTHSERVER_*`` variable, its default and its range; its command table
  against the ``authserver`` command: every command, every option, the defaults it gives.
- Every shell, console and Python block in README.md and docs/*.md is run: here (against a
  fresh SQLite database and keys directory, as ``make run`` prepares them), by the test that
  names its ``<!-- NAME:start -->`` section, by tests/live/test_readme.py (``<!-- continues the
  walkthrough -->``), or it is marked ``<!-- not run: why -->``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

from authserver import config
from authserver.config import Settings
from tests.support.docs import DOC_FILES, ROOT, DocBlock, doc_code_blocks

BIN = Path(sys.executable).parent
CODE_DIRS = ("authserver", "tests", "migrations", "benchmarks")
RUNNABLE = ("bash", "sh", "shell", "console", "python")
CONTINUES = "continues the walkthrough"
SECRET_KEY = "docs-test-secret-key-0123456789abcdef"


# -- citations and links --------------------------------------------------------------------
def headings(path: Path) -> set[str]:
    """The headings of a Markdown file (outside code blocks)."""
    found, fenced = set(), False
    for line in path.read_text().split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            found.add(match.group(1).strip())
    return found


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def code_files() -> list[Path]:
    return [path for top in CODE_DIRS for path in sorted((ROOT / top).rglob("*"))
            if path.is_file() and path.suffix in (".py", ".md", ".ini", ".mako", ".toml")
            and path != Path(__file__)]


def test_every_cited_section_exists():
    citations = 0
    for path in code_files():
        # A citation may run over a line break, in a docstring or in ``#`` comments.
        text = re.sub(r"\s*\n\s*(#\s*)?", " ", path.read_text(errors="replace"))
        for match in re.finditer(r"docs/([\w-]+\.md)(,? \"([^\"]+)\")?", text):
            guide, _, section = match.groups()
            where = f"{path.relative_to(ROOT)}: {match.group(0)!r}"
            assert (ROOT / "docs" / guide).exists(), f"{where}: no such guide"
            if guide == "design.md":
                assert section, f"{where}: cite docs/design.md with a section name"
            if section:
                assert section in headings(ROOT / "docs" / guide), f"{where}: no such section"
            citations += 1
    assert citations >= 20


def test_no_design_document_outside_the_repository_is_cited():
    # Spelled in pieces, so that this file does not find itself.
    outside = ("DESIGN" + ".md", "AUTHLIB" + "_NOTES", "../" + "shared", "/work/" + "shared")
    for path in [*code_files(), *DOC_FILES]:
        text = path.read_text(errors="replace")
        for name in outside:
            assert name not in text, f"{path.relative_to(ROOT)} cites {name}"


def test_links_between_the_docs_reach_a_file_and_a_heading():
    for path in DOC_FILES:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            file, _, fragment = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{path.relative_to(ROOT)}: {target}: no such file"
            if fragment and linked.suffix == ".md":
                assert fragment in {anchor(h) for h in headings(linked)}, (
                    f"{path.relative_to(ROOT)}: {target}: no such heading")


# -- the configuration table ------------------------------------------------------------------
def configuration_table() -> dict[str, dict[str, str]]:
    text = (ROOT / "docs" / "operators.md").read_text()
    section = text.split("\n## Configuration\n")[1].split("\n## ")[0]
    rows = {}
    for line in section.split("\n"):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if re.fullmatch(r"`AUTHSERVER_\w+`", cells[0]):
            variable, default, bounds, meaning = cells
            rows[variable.strip("`")] = {"default": default, "range": bounds, "meaning": meaning}
    return rows


def documented_default(field: dataclasses.Field) -> str:
    """How the table writes a setting's default."""
    value = field.default
    if field.name == "secret_key":
        assert value == config.DEV_SECRET_KEY
        return "a development value"
    if field.name == "default_audience":
        assert value == "" and Settings().audience == Settings().issuer
        return "the issuer"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if value != "" else "empty"


def accepted(name: str, value: int) -> bool:
    key = config.ENV_PREFIX + name.upper()
    problems = config.validate(dataclasses.replace(Settings(), **{name: value}))
    return not any(problem.startswith(key + ":") for problem in problems)


SETTINGS = [f for f in dataclasses.fields(Settings) if f.name != "extra"]


def test_the_configuration_table_has_every_setting_and_nothing_else():
    documented = set(configuration_table())
    expected = {config.ENV_PREFIX + f.name.upper() for f in SETTINGS} | {"AUTHSERVER_CONFIG"}
    assert documented - expected == set(), "documented, but no setting"
    assert expected - documented == set(), "settings missing from docs/operators.md"


@pytest.mark.parametrize("field", SETTINGS, ids=lambda f: f.name)
def test_the_configuration_table_gives_the_default_and_range(field):
    row = configuration_table()[config.ENV_PREFIX + field.name.upper()]
    assert row["default"] == documented_default(field)
    if field.type != "int":
        assert row["range"] == "", "only integers have a range"
        return
    bounds = re.fullmatch(r"(\d+) to (\d+)", row["range"])
    assert bounds, f"an integer setting needs its range, got {row['range']!r}"
    low, high = map(int, bounds.groups())
    assert accepted(field.name, low) and accepted(field.name, high)
    assert not accepted(field.name, low - 1) and not accepted(field.name, high + 1)


def test_config_default_toml_agrees_with_the_documented_defaults():
    """The shipped file sets values, not other defaults: what the table says is what runs."""
    shipped = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    defaults = {f.name: f.default for f in SETTINGS}
    assert {name: defaults[name] for name in shipped} == shipped
    documented = configuration_table()["AUTHSERVER_CONFIG"]["default"]
    assert documented == f"`{config.DEFAULT_CONFIG_FILE.as_posix()}`"


# -- the command table ----------------------------------------------------------------------
def cli_commands() -> dict[str, click.Command]:
    """Every ``authserver`` command by its path (``"db purge"``)."""
    from authserver.cli import cli

    found: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")
            else:
                found[prefix + name] = command
    walk(cli, "")
    return found


def options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)
            if opt.startswith("--")}


def command_table() -> dict[str, str]:
    """Each documented command (``"db purge"``) and its usage as the table writes it."""
    text = (ROOT / "docs" / "operators.md").read_text()
    section = text.split("\n## Command line\n")[1].split("\n## ")[0]
    usages = {}
    for line in section.split("\n"):
        first_cell = line.strip().strip("|").split(" | ")[0]
        for usage in re.findall(r"`authserver ([^`]+)`", first_cell):
            words = re.match(r"[a-z][a-z-]*( [a-z][a-z-]*)?", usage)
            assert words, usage
            usages[words.group(0)] = usage
    return usages


def test_the_command_table_has_every_command_with_its_options_and_defaults():
    commands, usages = cli_commands(), command_table()
    assert set(usages) == set(commands)
    text = (ROOT / "docs" / "operators.md").read_text() + (ROOT / "docs" / "clients.md").read_text()
    for path, usage in usages.items():
        command = commands[path]
        documented = set(re.findall(r"--[a-z][a-z-]*", usage))
        assert documented <= options(command), (path, documented - options(command))
        for option in options(command) - documented:
            # in a table of its own: clients create's options, the policies in
            # clients.md, serve's options
            assert re.search(rf"(?<![\w-]){option}(?![\w-])", text), (path, option)
        for option, value in re.findall(r"\[(--[a-z-]+) (\d+)\]", usage):
            (param,) = [p for p in command.params if option in p.opts]
            assert param.default == int(value), (path, option, param.default)
    assert options(commands["clients update"]) == options(commands["clients create"]) - {"--public"}


# -- the code blocks ------------------------------------------------------------------------
def referenced_sections() -> set[str]:
    """Section names that some test runs with ``doc_blocks("NAME", ...)``."""
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        if path != Path(__file__):
            names.update(re.findall(r"doc_blocks\(\s*\"([\w-]+)\"", path.read_text()))
    return names


def runnable_blocks() -> list[DocBlock]:
    return [block for path in DOC_FILES for block in doc_code_blocks(path)
            if block.language in RUNNABLE]


def run_here(block: DocBlock) -> bool:
    return block.note is None and not block.sections


def test_every_runnable_block_is_run_or_says_why_not():
    referenced = referenced_sections()
    assert "walkthrough" in referenced
    for block in runnable_blocks():
        if block.note is not None and block.note.startswith("not run:"):
            assert len(block.note) > len("not run: ") + 10, f"{block.where}: say why not"
        elif block.note is not None:
            assert block.note == CONTINUES, f"{block.where}: unknown note {block.note!r}"
            assert block.language == "bash", block.where
        elif block.sections:
            assert set(block.sections) & referenced, (
                f"{block.where}: no test runs section {block.sections}")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A database migrated and a key made once, as ``make run`` does; copied per block."""
    template = tmp_path_factory.mktemp("docs-template")
    env = block_env(template)
    for step in (["db", "upgrade"], ["keys", "ensure"]):
        subprocess.run([str(BIN / "authserver"), *step], env=env, check=True,
                       capture_output=True, timeout=120)
    return template


def block_env(workdir: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{workdir / 'authserver.sqlite3'}",
            "AUTHSERVER_KEYS_DIR": str(workdir / "keys"),
            "AUTHSERVER_SECRET_KEY": SECRET_KEY}


def console_steps(code: str) -> list[tuple[str, str]]:
    """``$ command`` lines and the output each one shows."""
    steps: list[tuple[str, list[str]]] = []
    for line in code.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"output before any command: {line!r}"
            steps[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in steps]


def run_console(code: str, cwd: Path, env: dict[str, str]) -> None:
    """Each command in one shell, in order; its output must be what the block shows
    (``...`` stands for anything)."""
    steps = console_steps(code)
    marker = "--- docs-test step ---"
    script = "exec 2>&1\n" + "".join(
        f"__status=$?; echo '{marker}'; (exit $__status)\n{command}\n" for command, _ in steps)
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=120)
    outputs = result.stdout.split(marker + "\n")[1:]
    assert len(outputs) == len(steps), result.stdout
    for (command, expected), output in zip(steps, outputs, strict=True):
        pattern = ".*".join(re.escape(part) for part in expected.split("..."))
        assert re.fullmatch(pattern, output.rstrip("\n"), flags=re.S), (command, output)


# -- what the examples import ----------------------------------------------------------------
_HEREDOC = re.compile(r"python3?\s+-\s*<<-?\s*'?(\w+)'?\n(.*?)\n\1\n", re.S)
_INLINE = re.compile(r"""python3? -c (?:'([^']*)'|"([^"]*)")""")


def python_sources(block: DocBlock) -> list[str]:
    """The Python a block runs: the block itself, or its ``python - <<EOF`` heredocs and
    ``python -c '...'`` one-liners."""
    if block.language == "python":
        return [block.code]
    if block.language not in ("bash", "sh", "shell", "console"):
        return []
    return ([m.group(2) for m in _HEREDOC.finditer(block.code)]
            + [one or two for one, two in _INLINE.findall(block.code)])


def imported_modules(source: str) -> set[str]:
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def runtime_modules() -> set[str]:
    """The standard library, authserver and the modules of the dependencies pyproject.toml
    declares for the server (what ``make run`` installs; not the ``test`` extra)."""
    import importlib.metadata

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]

    def name(requirement: str) -> str:
        return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    runtime = {name(requirement) for requirement in declared}
    modules = set(sys.stdlib_module_names) | {"authserver"}
    for module, distributions in importlib.metadata.packages_distributions().items():
        if any(name(d) in runtime for d in distributions):
            modules.add(module)
    return modules


def test_the_examples_import_only_what_make_run_installs():
    """A reader runs the README's and the guides' Python after ``make run``: in its
    virtualenv, without ``make test``'s extras (``requests``, for one)."""
    allowed = runtime_modules()
    assert {"json", "jwt", "joserfc", "flask"} <= allowed and "requests" not in allowed
    problems = [f"{block.where}: imports {sorted(extra)}"
                for path in DOC_FILES for block in doc_code_blocks(path)
                for source in python_sources(block)
                for extra in (imported_modules(source) - allowed,) if extra]
    assert not problems, problems
    assert sum(len(python_sources(b)) for path in DOC_FILES for b in doc_code_blocks(path)) > 5


@pytest.mark.parametrize("block", [b for b in runnable_blocks() if run_here(b)],
                         ids=lambda b: b.where)
def test_the_block_runs(block, prepared, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(prepared, workdir)
    env = block_env(workdir)
    code = block.code.replace(".venv/bin/", f"{BIN}/")
    if block.language == "console":
        run_console(code, workdir, env)
        return
    command = ([sys.executable, "-c", code] if block.language == "python"
               else ["bash", "-euo", "pipefail", "-c", code])
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
