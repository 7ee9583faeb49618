"""Every placeholder in every rule's shell line is shell-quoted (`{output.x:q}`), so no config value,
wildcard or path can split into several words or run as shell code."""

import ast
import io
import re
import string
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk")) + [ROOT / "Snakefile"]
RULE = re.compile(r"\s*rule\b[^:]*:")
SKIP = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT}


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """(line, command) of each `shell:` directive: its string literals, joined as Snakemake joins them."""
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    found = []
    for i, tok in enumerate(tokens):
        if not (tok.type == tokenize.NAME and tok.string == "shell" and tokens[i + 1].string == ":"):
            continue
        parts, j = [], i + 2
        while tokens[j].type in SKIP or tokens[j].type == tokenize.STRING:
            if tokens[j].type == tokenize.STRING:
                parts.append(ast.literal_eval(tokens[j].string))
            j += 1
        assert parts, f"{path.name}:{tok.start[0]}: a shell directive without a plain string literal"
        found.append((tok.start[0], "".join(parts)))
    return found


def unquoted(command: str) -> list[str]:
    """The placeholders of a shell command that Snakemake would not quote."""
    return [f"{{{field}{':' + spec if spec else ''}}}" for _, field, spec, _ in string.Formatter().parse(command)
            if field is not None and not (spec or "").endswith("q")]


def test_the_check_sees_an_unquoted_placeholder():
    assert unquoted("kdpipe x --out {output.a:q} --in {input} > {log:q} 2>&1") == ["{input}"]
    assert unquoted("echo {{literal braces}} {params.x:q}") == []
    assert unquoted("kdpipe x {params.flag:u}") == ["{params.flag:u}"]


def test_every_rule_has_its_shell_line_found():
    # `rule name:` at the top, and `rule:` (named by a `name:` directive) inside a loop (the sweeps')
    rules = sum(1 for p in RULE_FILES for line in p.read_text().splitlines() if RULE.match(line))
    commands = [c for p in RULE_FILES for c in shell_commands(p)]
    # The Snakefile's rules only collect targets; every rule under workflow/rules runs a command.
    targets_only = sum(1 for line in (ROOT / "Snakefile").read_text().splitlines() if line.startswith("rule "))
    assert len(commands) == rules - targets_only > 0


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_every_placeholder_in_a_shell_line_is_quoted(path):
    bad = [f"{path.name}:{line}: {field}" for line, cmd in shell_commands(path) for field in unquoted(cmd)]
    assert bad == [], "quote these placeholders ({x:q}):\n" + "\n".join(bad)
