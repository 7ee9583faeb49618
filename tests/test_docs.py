"""The docs: tables that restate a registry are generated from it (kdpipe.docs_tables, `kdpipe docs`),
the committed pages match what it writes, and README's test command is the one CI runs."""

import dataclasses
import re
from pathlib import Path

import pytest

from kdpipe import cli, docs_tables, methods

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy_method(monkeypatch):
    """A method registered for one test: built from kd_soft's entry so only the shown fields change."""
    toy = dataclasses.replace(
        methods.METHODS["kd_soft"], name="toy_kd", label="toy distillation", formula="CE + 0·toy",
        params={"gain": methods.Param(1.5, {"type": "number", "exclusiveMinimum": 0}, "logit gain")},
        references={("resnet56", "resnet20"): 12.3}, reference_source="the toy paper (CIFAR-100)")
    monkeypatch.setitem(methods.METHODS, "toy_kd", toy)
    return toy


def _page(tmp_path: Path, name: str, body: str = "stale\n") -> Path:
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir(exist_ok=True)
    page.write_text(f"# Title\n\nbefore\n<!-- BEGIN generated: {name} -->\n{body}<!-- END generated: {name} -->\nafter\n")
    return page


def test_committed_pages_match_the_registries():
    stale = docs_tables.update(ROOT, check=True)
    assert stale == [], f"{stale[0]} differs from the registries: run `kdpipe docs`"


def test_the_method_page_has_every_registered_method():
    text = (ROOT / "docs" / "methods.md").read_text()
    for name, m in methods.METHODS.items():
        assert f"| `{name}` | {m.label} |" in text


def test_a_registered_method_appears_in_the_generated_table(toy_method):
    lines = docs_tables.methods_table().splitlines()
    row = next(line for line in lines if line.startswith("| `toy_kd` |"))
    assert row == "| `toy_kd` | toy distillation | CE + 0·toy | gain 1.5 | yes | – | 1 | resnet56→resnet20: 12.30 |"
    assert "- `toy_kd`: the toy paper (CIFAR-100); epoch: not stated" in lines  # kd_soft's convention, inherited
    assert "| `toy_kd` | `gain` | 1.5 | number, > 0 | logit gain |" in docs_tables.method_settings_table().splitlines()


def test_render_rewrites_only_between_the_markers(tmp_path, toy_method):
    page = _page(tmp_path, "methods")
    text = docs_tables.render(page)
    assert text.startswith("# Title\n\nbefore\n<!-- BEGIN generated: methods -->\n\n| method |")
    assert text.endswith("\n\n<!-- END generated: methods -->\nafter\n")
    assert "stale" not in text and "| `toy_kd` | toy distillation |" in text
    assert page.read_text().count("stale") == 1  # render returns the page; it writes nothing
    page.write_text(text)
    assert docs_tables.render(page) == text  # a second run changes nothing


def test_architectures_table_from_the_registry(monkeypatch):
    """One row per entry, in registry order: a published number with its source and epoch
    convention, a missing epoch time or number as a dash."""
    from dataclasses import replace

    from kdpipe import architectures

    wrn = architectures.get("wrn_16_2")
    toy = replace(architectures.get("resnet8"), name="tiny_net", description="a toy", stages="after each stage",
                  stage_shapes=((8, 16, 16), (8, 8, 8), (8, 4, 4)), params_cifar100=12_345, epoch_s=None,
                  references={}, reference_source="", reference_epoch="")
    monkeypatch.setattr(architectures, "ARCHITECTURES", {"wrn_16_2": replace(wrn, epoch_s=3.5), "tiny_net": toy})
    lines = docs_tables.architectures_table().splitlines()
    assert lines[0] == ("| architecture | description | stage outputs | stage shapes (32×32 image) | "
                        "parameters (CIFAR-100) | expected epoch (s) | published CIFAR-100 top-1 % | source |")
    assert lines[2] == (f"| `wrn_16_2` | {wrn.description} | {wrn.stages} | 32×32×32, 64×16×16, 128×8×8 | 0.70 M | "
                        "3.5 | alone 73.26 | RepDistiller README (CIFAR-100, top-1 %, 240 epochs); epoch: not stated |")
    assert lines[3] == "| `tiny_net` | a toy | after each stage | 8×16×16, 8×8×8, 8×4×4 | 12.3 k | – | – | – |"
    assert len(lines) == 4


def test_cli_check_names_the_stale_page_and_docs_fixes_it(tmp_path, monkeypatch, capsys):
    page = _page(tmp_path, "methods")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["docs", "--check"])
    assert str(exit_.value).startswith("kdpipe: ") and str(page.relative_to(tmp_path)) in str(exit_.value)
    assert page.read_text().count("stale") == 1  # --check writes nothing
    assert cli.main(["docs"]) == 0 and "stale" not in page.read_text()
    assert cli.main(["docs", "--check"]) == 0
    assert "match the registries" in capsys.readouterr().out


def test_readme_is_rewritten_only_when_it_has_a_block(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# no generated block here\n")
    assert docs_tables.pages(tmp_path) == []
    (tmp_path / "README.md").write_text("<!-- BEGIN generated: methods -->\n<!-- END generated: methods -->\n")
    assert docs_tables.pages(tmp_path) == [tmp_path / "README.md"]


@pytest.mark.parametrize("body, message", [
    ("<!-- BEGIN generated: methods -->\nx\n", "is not closed"),
    ("<!-- BEGIN generated: methods -->\nx\n<!-- END generated: architectures -->\n", "is not closed"),
    ("<!-- BEGIN generated: colours -->\nx\n<!-- END generated: colours -->\n", "unknown generated block 'colours'"),
])
def test_a_broken_block_is_one_line_naming_the_page(tmp_path, body, message):
    page = tmp_path / "page.md"
    page.write_text(body)
    with pytest.raises(docs_tables.InputError, match=message) as err:
        docs_tables.render(page)
    assert str(page) in str(err.value) and "\n" not in str(err.value)


def test_readme_test_command_is_what_ci_runs():
    """README's second command, verbatim, is the last line of .ci/run."""
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    readme = (ROOT / "README.md").read_text()
    assert ci[-1] == "pip install -e '.[test]' && python -m pytest -q"
    assert f"\n    {ci[-1]}\n" in readme


def test_links_between_pages_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)|src=\"([^\"]+)\"", page.read_text()):
            target = next(t for t in target if t)
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"

