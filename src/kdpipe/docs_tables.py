"""Tables in the docs that restate a registry, generated from it (``kdpipe docs``).

A page marks a generated block with two HTML comments, which Markdown does not show:

    <!-- BEGIN generated: methods -->
    ...written by kdpipe docs, never by hand...
    <!-- END generated: methods -->

``render`` rewrites every block of a page from the registries; ``kdpipe docs --check`` (and
tests/test_docs.py) fails when a committed page differs, so a new method or architecture cannot
leave a stale table behind. This module reads the registries only: no torch.
"""

import re
from pathlib import Path

from kdpipe.errors import InputError

_BLOCK = re.compile(r"(<!-- BEGIN generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END generated: (?P=name) -->)",
                    re.DOTALL)
_MARKER = re.compile(r"<!-- (BEGIN|END) generated: ([\w-]+) -->")


def _cell(text) -> str:
    # A "|" inside a cell would end it.
    return str(text).replace("|", "\\|")


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(x) -> str:
    # 4 -> "4", 0.9 -> "0.9", 100.0 -> "100": the way a person writes a default.
    return f"{x:g}" if isinstance(x, float) else str(x)


def _method_references(m) -> str:
    if not m.references:
        return "–"
    parts = []
    for (teacher, student), top1 in m.references.items():
        # Mutual learning keys its number by (student, student), as kdpipe.methods.reference reads it.
        pair = f"{student} ×{m.students}" if not m.needs_teacher and m.students > 1 else f"{teacher}→{student}"
        parts.append(f"{pair}: {top1:.2f}")
    return "; ".join(parts)


def methods_table() -> str:
    """One row per registered method (kdpipe.methods.METHODS), then the sources of its published numbers.

    The student alone's numbers are keyed by the pair whose student it is, as in kdpipe.methods.
    """
    from kdpipe.methods import METHODS

    rows = []
    for name, m in METHODS.items():
        settings = ", ".join(f"{k} {_number(p.default)}" for k, p in m.params.items()) or "–"
        rows.append([f"`{name}`", m.label, m.formula, settings, "yes" if m.needs_teacher else "no",
                     ", ".join(m.features) or "–", m.students, _method_references(m)])
    table = _table(["method", "label", "loss", "settings (defaults)", "teacher", "stage outputs", "students",
                    "published CIFAR-100 top-1 %"], rows)
    sources: dict[str, list[str]] = {}
    for name, m in METHODS.items():
        if m.references:
            source = _with_epoch(m.reference_source or "source not given", getattr(m, "reference_epoch", ""))
            sources.setdefault(source, []).append(f"`{name}`")
    notes = "\n".join(f"- {', '.join(names)}: {source}" for source, names in sources.items())
    return f"{table}\n\nSources of the published numbers:\n\n{notes}" if notes else table


def _with_epoch(source: str, epoch: str) -> str:
    """A source with the epoch convention it states (kdpipe.references.EPOCH_CONVENTIONS)."""
    return f"{source}; epoch: {epoch}" if epoch else source


def method_settings_table() -> str:
    """Every method setting: its default, its allowed values (the schema fragment) and what it means."""
    from kdpipe.methods import METHODS

    rows = []
    for name, m in METHODS.items():
        for key, p in m.params.items():
            rows.append([f"`{name}`", f"`{key}`", _number(p.default), _range(p.schema), p.help])
    return _table(["method", "setting", "default", "allowed", "meaning"], rows)


def _range(schema: dict) -> str:
    kind = schema.get("type", "any")
    bounds = [f"≥ {_number(schema['minimum'])}" if "minimum" in schema else "",
              f"> {_number(schema['exclusiveMinimum'])}" if "exclusiveMinimum" in schema else "",
              f"≤ {_number(schema['maximum'])}" if "maximum" in schema else "",
              f"< {_number(schema['exclusiveMaximum'])}" if "exclusiveMaximum" in schema else ""]
    return ", ".join([kind, *(b for b in bounds if b)])


def _params(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def _shapes(shapes) -> str:
    return ", ".join("×".join(map(str, s)) for s in shapes)


def architectures_table() -> str:
    """One row per registered architecture (kdpipe.architectures.ARCHITECTURES)."""
    from kdpipe.architectures import ARCHITECTURES

    rows = []
    for a in ARCHITECTURES.values():
        refs = a.references
        published = [f"{role} {refs[role]:.2f}" for role in ("alone", "teacher") if refs.get(role) is not None]
        rows.append([f"`{a.name}`", a.description, a.stages, _shapes(a.stage_shapes), _params(a.params_cifar100),
                     "–" if a.epoch_s is None else _number(a.epoch_s),
                     ", ".join(published) or "–",
                     _with_epoch(a.reference_source, a.reference_epoch) if published else "–"])
    return _table(["architecture", "description", "stage outputs", "stage shapes (32×32 image)", "parameters (CIFAR-100)",
                   "expected epoch (s)", "published CIFAR-100 top-1 %", "source"], rows)


GENERATORS = {
    "methods": methods_table,
    "method-settings": method_settings_table,
    "architectures": architectures_table,
}


def render(path: Path | str) -> str:
    """The page at ``path`` with every generated block rewritten from the registries (not written)."""
    path = Path(path)
    text = path.read_text()
    opened = [(m.group(1), m.group(2)) for m in _MARKER.finditer(text)]
    blocks = [m.group("name") for m in _BLOCK.finditer(text)]
    if len(opened) != 2 * len(blocks):
        raise InputError(f"{path}: a generated block is not closed; every <!-- BEGIN generated: NAME --> needs "
                         "its own <!-- END generated: NAME --> on a later line")
    unknown = sorted(set(blocks) - set(GENERATORS))
    if unknown:
        raise InputError(f"{path}: unknown generated block {unknown[0]!r}; known: {', '.join(GENERATORS)}")

    def block(m: re.Match) -> str:
        return f"{m.group(1)}\n{GENERATORS[m.group('name')]()}\n\n{m.group(4)}"

    return _BLOCK.sub(block, text)


def pages(root: Path | str) -> list[Path]:
    """The pages ``kdpipe docs`` keeps up to date: docs/*.md, and README.md when it has a block."""
    root = Path(root)
    found = sorted((root / "docs").glob("*.md"))
    readme = root / "README.md"
    if readme.exists() and _MARKER.search(readme.read_text()):
        found.insert(0, readme)
    return found


def update(root: Path | str, check: bool = False) -> list[Path]:
    """Rewrite the pages whose generated blocks are stale (or, with ``check``, only list them)."""
    stale = []
    for page in pages(root):
        text = render(page)
        if text != page.read_text():
            stale.append(page)
            if not check:
                page.write_text(text)
    return stale
