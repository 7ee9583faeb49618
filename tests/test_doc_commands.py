"""Every `snakemake` command the pages and the files' header comments show parses as Snakemake
parses it, and keeps its target.

`--configfile` and `--resources` take several values: a target written after either is read as a
config file or a resource (`--resources gpu=2 results/report.pdf` stops Snakemake with a
ValueError; `--configfile presets/demo.yaml results/report.pdf` asks for a config file named
results/report.pdf). Running each command is the pipeline tests' job; this test reads them all
with Snakemake's own argument parser, in a second.
"""

import re
import shlex
from pathlib import Path

import pytest
from snakemake.cli import get_argument_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HEADERS = [ROOT / "Snakefile", ROOT / "config.yaml", *sorted((ROOT / "presets").glob("*.yaml")),
           *sorted((ROOT / "profiles").glob("*/config.yaml"))]


def _command(text: str) -> str | None:
    """The `snakemake ...` part of a shell line (after `VAR=value` and `cmd &&` prefixes), or None."""
    for part in text.split("&&"):
        words = part.strip()
        words = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", words)
        if words.startswith("snakemake "):
            return words
    return None


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) for every snakemake command in an indented code line or an inline code span
    of a page, and in a header comment line of a workflow, config, preset or profile file."""
    found = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            candidates = [line[4:]] if line.startswith("    ") else []
            candidates += re.findall(r"`([^`]+)`", line)
            for text in candidates:
                command = _command(text.split(" # ")[0])
                if command:
                    found.append((f"{page.relative_to(ROOT)}:{number}", command))
    for path in HEADERS:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.startswith("#"):
                # a header comment: the command, then two or more spaces before any remark
                command = _command(re.split(r"\s{2,}", line.lstrip("#").strip())[0])
                if command:
                    found.append((f"{path.relative_to(ROOT)}:{number}", command))
    return found


COMMANDS = documented_commands()


def test_the_pages_show_the_commands_this_test_reads():
    where = {w.split(":")[0] for w, _ in COMMANDS}
    assert {"README.md", "docs/gpu.md", "docs/dvc.md", "config.yaml", "Snakefile"} <= where
    assert any("--resources gpu=2" in c for _, c in COMMANDS)


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_snakemake_command_parses_and_keeps_its_target(where, command):
    words = shlex.split(command, comments=True)[1:]
    try:
        args = get_argument_parser().parse_args(words)
    except (ValueError, SystemExit) as err:  # what `snakemake` itself would stop with
        pytest.fail(f"{where}: `{command}` does not parse: {err!r}; put the target first")
    for configfile in args.configfile or []:
        assert (ROOT / configfile).is_file() and Path(configfile).suffix == ".yaml", (
            f"{where}: `{command}` reads {configfile} as a config file; put the target first")
