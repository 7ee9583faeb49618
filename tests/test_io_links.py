"""kdpipe's writes never follow a link they did not make (issue 19's rule, for kdpipe.io).

A symlink planted at the temp name a job will use (``.<name>.tmp-<pid>``: pids are guessable) or
at the output itself must not make the job write through it: the victim stays byte for byte as it
was and the output is a regular file of the job's own.
"""

import os
import stat
from pathlib import Path

import pytest
import torch

from kdpipe import io
from kdpipe.errors import InputError
from report_stubs import skip_sections, write_stub_tables

SECRET = b"SECRET DATA of the job's user\n"


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    os.chmod(path, 0o600)
    return path


def untouched(victim: Path) -> None:
    assert victim.read_bytes() == SECRET and stat.S_IMODE(os.stat(victim).st_mode) == 0o600


def regular(path: Path) -> None:
    assert stat.S_ISREG(os.lstat(path).st_mode)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def plant_at_temp(out: Path, victim: Path) -> Path:
    """A symlink at the temp name this process will use for ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    link = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    assert link == io._tmp_beside(out)
    link.symlink_to(victim)
    return link


def test_atomic_save_does_not_write_through_a_link_at_its_temp_name(tmp_path, victim):
    out = tmp_path / "run" / "model.pt"
    plant_at_temp(out, victim)
    io.atomic_save({"w": torch.arange(3)}, out)
    untouched(victim)
    regular(out)
    assert torch.equal(torch.load(out, weights_only=True)["w"], torch.arange(3))


def test_atomic_write_text_does_not_write_through_a_link_at_its_temp_name(tmp_path, victim):
    out = tmp_path / "run" / "metrics.json"
    plant_at_temp(out, victim)
    io.write_json({"top1": 0.5}, out)
    untouched(victim)
    regular(out)
    assert io.read_json(out) == {"top1": 0.5}


def test_a_dangling_link_at_the_temp_name_creates_nothing_at_its_target(tmp_path):
    out = tmp_path / "run" / "history.csv"
    nowhere = tmp_path / "created-by-following.txt"
    plant_at_temp(out, nowhere)
    io.atomic_write_text("a,b\n", out)
    assert not nowhere.exists() and out.read_text() == "a,b\n"
    regular(out)


def test_the_report_does_not_write_through_a_link_at_its_temp_name(tmp_path, victim, monkeypatch):
    import kdpipe.report.build as build

    tables = tmp_path / "tables"
    write_stub_tables(tables)
    skip_sections(monkeypatch)
    out = tmp_path / "results" / "report.pdf"
    plant_at_temp(out, victim)
    build.build_report(out=out, name="tiny", tables_dir=tables, figures_dir=tmp_path)
    untouched(victim)
    regular(out)
    assert out.read_bytes().startswith(b"%PDF")


def test_a_link_at_the_output_itself_is_replaced_not_written_through(tmp_path, victim):
    out = tmp_path / "run" / "model.pt"
    out.parent.mkdir()
    out.symlink_to(victim)
    io.atomic_save({"w": torch.ones(2)}, out)
    untouched(victim)
    regular(out)
    text = tmp_path / "tables" / "kd_runs.csv"
    text.parent.mkdir()
    text.symlink_to(victim)
    io.atomic_write_text("a,b\n", text)
    untouched(victim)
    regular(text)
    assert text.read_text() == "a,b\n"


def test_a_dead_writers_symlink_temp_is_removed_and_its_target_kept(tmp_path, victim):
    out = tmp_path / "run" / "resume.pt"
    out.parent.mkdir()
    link = out.with_name(".resume.pt.tmp-999999999")  # no process has that pid (pid_max is at most 2**22)
    link.symlink_to(victim)
    assert io.remove_stale_temps(out) == [link]
    assert not os.path.lexists(link)
    untouched(victim)


def test_a_directory_at_the_temp_name_is_refused_on_one_line(tmp_path):
    out = tmp_path / "run" / "model.pt"
    folder = io._tmp_beside(out)
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(InputError, match=rf"^{folder} is a directory where kdpipe writes its temp file: remove it "
                                         "and rerun$"):
        io.atomic_write_text("x", out)
    assert (folder / "inside").is_dir() and not out.exists()


def test_a_figure_is_written_through_its_own_file_not_a_planted_link(tmp_path, victim):
    """Figures go through kdpipe.io too: a link at the temp name or at the PNG itself is never followed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kdpipe.figures import save_png

    out = tmp_path / "figures" / "kd-accuracy.png"
    plant_at_temp(out, victim)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_png(fig, out, dpi=20)
    untouched(victim)
    regular(out)
    assert out.read_bytes().startswith(b"\x89PNG")
    out.unlink()
    out.symlink_to(victim)
    save_png(fig, out, dpi=20)
    plt.close(fig)
    untouched(victim)
    regular(out)
