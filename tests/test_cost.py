"""What each number cost (issue 17 item 4): device-hours per run from what its job recorded, shares of
a shared GPU, the teacher's share per student, the cost columns of the methods table and the report's
first-page sentence, all against hand-computed values."""

import json

import pandas as pd
import pytest

from kdpipe.tables.cost import cost_rows, cost_sentence, shared_seconds, student_costs, summary_cost, total_cost

H100, A100 = "cuda:0 (NVIDIA H100)", "cuda:0 (NVIDIA A100)"


def metrics(run, *, device=H100, host="h", started=None, claimed=None, finished=None, wall=None, family="classify",
            **extra) -> dict:
    m = {"run": run, "family": family, "config": {"dataset": "d"}, "device": device, "host": host, **extra}
    for key, value in (("started_at", started), ("device_claimed_at", claimed), ("finished_at", finished),
                       ("wall_time_s", wall)):
        if value is not None:
            m[key] = value
    return m


def test_shared_seconds_split_each_overlap_evenly():
    # Two jobs overlapping half their time: 50 s alone + 50 s / 2 each; together the 150 s the GPU was busy.
    assert shared_seconds([(0, 100), (50, 150)]) == [75.0, 75.0]
    # Three at once for 30 s, then two for 30 s, then one.
    assert shared_seconds([(0, 30), (0, 60), (0, 90)]) == pytest.approx([10.0, 25.0, 55.0])
    assert shared_seconds([(0, 10), (20, 30)]) == [10.0, 10.0]  # back to back: no sharing


def test_cost_rows_share_a_gpu_by_recorded_overlap():
    rows = cost_rows([
        # waited 10 s for its slot (started 0, claimed 10): waiting costs no device time
        metrics("a", started=0, claimed=10, finished=110, wall=110),
        metrics("b", started=60, claimed=60, finished=160, wall=100),
        metrics("c", device="cuda:1 (NVIDIA H100)", claimed=60, finished=160),  # another GPU: whole
        metrics("d", device=A100, host="other", claimed=60, finished=3660),  # another host: whole
        metrics("e", device="cpu", wall=30.0),  # a CPU job: its wall time, as CPU-hours
        metrics("f", wall=40.0),  # from before the times were recorded: its wall time
        metrics("t", device="cpu", wall=12.0, imported=True),  # imported: costs 0
    ]).set_index("run")
    assert rows["device_s"].to_dict() == {"a": 100.0, "b": 100.0, "c": 100.0, "d": 3600.0, "e": 30.0, "f": 40.0,
                                          "t": 12.0}
    assert (rows["cost_h"] * 3600).to_dict() == pytest.approx({"a": 75, "b": 75, "c": 100, "d": 3600, "e": 30,
                                                                "f": 40, "t": 0})
    assert rows.loc["a", "shared_by"] == pytest.approx(100 / 75) and rows.loc["c", "shared_by"] == 1.0
    assert rows["cost_on"].to_dict() == {"a": "GPU", "b": "GPU", "c": "GPU", "d": "GPU", "e": "CPU", "f": "GPU",
                                         "t": "CPU"}
    assert rows.loc["d", "device_model"] == "NVIDIA A100" and rows.loc["e", "device_model"] == "CPU"
    assert rows.loc["a", "job"] == "d-classify-a"
    t = total_cost(rows.reset_index())
    assert t["gpu_models"] == pytest.approx({"NVIDIA A100": 1.0, "NVIDIA H100": (75 + 75 + 100 + 40) / 3600})
    assert t["cpu_h"] == pytest.approx(30 / 3600) and (t["runs"], t["imported"]) == (6, 1)


def test_cost_sentence_names_the_hours_and_devices():
    rows = cost_rows([metrics("a", claimed=0, finished=100), metrics("b", claimed=50, finished=150),
                      metrics("d", device=A100, host="other", claimed=0, finished=3600),
                      metrics("e", device="cpu", wall=30.0), metrics("t", device="cpu", wall=5.0, imported=True)])
    # H100: 75 + 75 s = 150 s = 0.0417 h; A100: 1 h; together 1.04 GPU-hours; CPU: 30 s = 0.00833 h
    assert cost_sentence(rows) == (
        "Training the 4 runs of this report cost 1.04 GPU-hours (1 on NVIDIA A100, 0.0417 on NVIDIA H100) and "
        "0.00833 CPU-hours (wall time of jobs on the CPU); 1 imported teacher cost 0 (not trained here), read "
        "from each job's metrics.json; a job that shared a GPU with k−1 others counts 1/k of that time.")
    only_cpu = cost_rows([metrics("e", device="cpu", wall=7200.0)])
    assert cost_sentence(only_cpu).startswith("Training the 1 runs of this report cost 2 CPU-hours (wall time")


# --- per method and pair: the teacher's share and the gain per hour -------------------------------

def kd_metrics_file(tmp_path, run, method, arch, seed, top1, *, teacher="", claimed, seconds, device=H100,
                    imported=False):
    cfg = {"method": method, "dataset": "d", "dataset_source": "synthetic", "arch": arch, "train": {"epochs": 2}}
    if teacher:
        cfg.update(teacher=teacher, teacher_run=f"teacher-{teacher}-s{seed}")
    m = {"run": run, "family": "classify", "seed": seed, "config": cfg, "git_commit": "x", "device": device,
         "host": "h", "best": {"top1": top1, "top5": 90.0, "epoch": 2}, "last": {"top1": top1, "top5": 90.0},
         "train_images": 100, "params": 10, "wall_time_s": seconds, "device_claimed_at": claimed,
         "finished_at": claimed + seconds}
    if imported:
        m.update(imported=True, source={"name": "mdistiller", "url": "https://example.org/t.tar",
                                        "member": "cifar_teachers/resnet14_vanilla/ckpt_epoch_240.pth"},
                 checkpoint_sha256="0" * 64)
    path = tmp_path / f"{run}.json"
    path.write_text(json.dumps(m))
    return path


def kd_files(tmp_path, *, imported=False):
    """One teacher per seed (1 h at seed 0, 2 h at seed 1) taught by three students (kd_soft, kd_hard,
    dkd; half an hour each), beside the student alone (half an hour); one after another on one GPU."""
    files, clock = [], 0.0

    def add(run, method, arch, seed, top1, seconds, **kw):
        nonlocal clock
        files.append(kd_metrics_file(tmp_path, run, method, arch, seed, top1, claimed=clock, seconds=seconds, **kw))
        clock += seconds + 1

    for seed, teacher_s in ((0, 3600.0), (1, 7200.0)):
        if imported:
            add(f"teacher-resnet14-s{seed}", "teacher", "resnet14", seed, 70.0, 10.0, device="cpu", imported=True)
        else:
            add(f"teacher-resnet14-s{seed}", "teacher", "resnet14", seed, 70.0, teacher_s)
        add(f"alone-resnet8-s{seed}", "alone", "resnet8", seed, 50.0 + 2 * seed, 1800.0)
        add(f"kd_soft-resnet8-from-resnet14-s{seed}", "kd_soft", "resnet8", seed, 54.0 + seed, 1800.0,
            teacher="resnet14")
        for method in ("kd_hard", "dkd"):
            add(f"{method}-resnet8-from-resnet14-s{seed}", method, "resnet8", seed, 51.0, 1800.0, teacher="resnet14")
    return files


def test_a_teacher_is_shared_by_its_three_students(tmp_path):
    from kdpipe.tables.cost import run_costs
    from kdpipe.tables.kd import kd_run_rows

    files = kd_files(tmp_path)
    per_run = student_costs(kd_run_rows(files), run_costs(files)).set_index("run")
    soft0, soft1 = per_run.loc["kd_soft-resnet8-from-resnet14-s0"], per_run.loc["kd_soft-resnet8-from-resnet14-s1"]
    assert (soft0["own_gpu_h"], soft0["teacher_gpu_h"], soft0["gpu_h"]) == pytest.approx((0.5, 1 / 3, 0.5 + 1 / 3))
    assert soft1["teacher_gpu_h"] == pytest.approx(2 / 3)
    assert per_run.loc["alone-resnet8-s0", ["teacher_gpu_h", "gpu_h"]].tolist() == pytest.approx([0.0, 0.5])
    # The three students' shares add up to the teacher's whole hour.
    assert per_run.loc[per_run.index.str.endswith("-from-resnet14-s0"), "teacher_gpu_h"].sum() == pytest.approx(1.0)
    assert per_run.loc["teacher-resnet14-s1", "gpu_h"] == pytest.approx(2.0)


def test_an_imported_teacher_costs_nothing(tmp_path):
    from kdpipe.tables.cost import run_costs
    from kdpipe.tables.kd import kd_run_rows

    files = kd_files(tmp_path, imported=True)
    costs = run_costs(files)
    per_run = student_costs(kd_run_rows(files), costs).set_index("run")
    assert per_run.loc["teacher-resnet14-s0", ["gpu_h", "cpu_h"]].tolist() == [0.0, 0.0]
    assert per_run.loc["kd_soft-resnet8-from-resnet14-s0", ["teacher_gpu_h", "teacher_cpu_h", "gpu_h"]].tolist() == \
        pytest.approx([0.0, 0.0, 0.5])
    assert total_cost(costs)["imported"] == 2 and total_cost(costs)["gpu_h"] == pytest.approx(8 * 0.5)


def test_methods_table_gets_cost_and_gain_per_gpu_hour(tmp_path):
    from kdpipe.tables.cost import run_costs
    from kdpipe.tables.kd import kd_run_rows, kd_summary

    files = kd_files(tmp_path)
    runs = kd_run_rows(files)
    summary = summary_cost(kd_summary(runs), runs, run_costs(files)).set_index("entry")
    soft = summary.loc["kd_soft"]
    # own 0.5 h + the teacher's share (1/3 h at seed 0, 2/3 h at seed 1): 1.0 GPU-h per model on average
    assert (soft["cost_gpu_h"], soft["cost_teacher_gpu_h"], soft["cost_cpu_h"]) == pytest.approx((1.0, 0.5, 0.0))
    assert soft["cost_unit"] == "GPU-h"
    # gain over the student alone, paired by seed: (54 - 50 + 55 - 52) / 2 = 3.5 points, per 1.0 GPU-h
    assert soft["best_top1_diff_mean"] == pytest.approx(3.5)
    assert soft["best_top1_gain_per_h"] == pytest.approx(3.5) and soft["last_top1_gain_per_h"] == pytest.approx(3.5)
    hard = summary.loc["kd_hard"]  # 51 - 50 and 51 - 52: no gain on average
    assert hard["best_top1_gain_per_h"] == pytest.approx(0.0)
    assert summary.loc["alone", "cost_gpu_h"] == pytest.approx(0.5)  # no teacher, no share
    assert summary.loc["teacher", "cost_gpu_h"] == pytest.approx(1.5)  # (1 + 2) / 2, no share of anything


def test_methods_table_and_first_page_show_the_cost(tmp_path):
    from matplotlib.backends.backend_pdf import PdfPages
    from pypdf import PdfReader

    from kdpipe.report.build import title_page
    from kdpipe.report.kd import methods_table
    from kdpipe.tables.cost import run_costs
    from kdpipe.tables.jobs import jobs_table
    from kdpipe.tables.kd import kd_run_rows, kd_summary

    files = kd_files(tmp_path)
    runs = kd_run_rows(files)
    summary = summary_cost(kd_summary(runs), runs, run_costs(files))
    columns, rows = methods_table(summary, "best")
    assert "cost per model\n(Δ per hour)" in columns
    soft = next(r for r in rows if r[0] == summary.set_index("entry").loc["kd_soft", "label"])
    assert soft[columns.index("cost per model\n(Δ per hour)")] == "1 GPU-h (+3.5/h)"
    # The jobs table holds each run's cost (no benchmark files here: the rows come from metrics.json).
    jobs = jobs_table([], files, out_csv=tmp_path / "jobs.csv")
    assert jobs["cost_h"].sum() == pytest.approx(1 + 2 + 8 * 0.5)
    jobs = pd.read_csv(tmp_path / "jobs.csv")
    with PdfPages(tmp_path / "first.pdf") as pdf:
        title_page(pdf, "tiny", runs, jobs, ["alone", "kd_soft"])
    text = " ".join(PdfReader(tmp_path / "first.pdf").pages[0].extract_text().split())
    # 1 + 2 teacher hours + 8 students × half an hour = 7 GPU-hours on the H100
    assert ("Training the 10 runs of this report cost 7 GPU-hours (7 on NVIDIA H100), read from each job's "
            "metrics.json; a job that shared a GPU with k−1 others counts 1/k of that time.") in text


def test_jobs_appendix_cost_cells():
    from kdpipe.report.jobs import cost_cell

    rows = cost_rows([metrics("a", claimed=0, finished=100), metrics("b", claimed=50, finished=150),
                      metrics("e", device="cpu", wall=36.0), metrics("t", device="cpu", wall=5.0, imported=True)])
    cells = {r["run"]: cost_cell(r) for _, r in rows.iterrows()}
    # 75 s = 0.0208 h, on a GPU shared by 100/75 = 1.33 jobs on average
    assert cells == {"a": "0.0208 GPU-h ÷1.33", "b": "0.0208 GPU-h ÷1.33", "e": "0.01 CPU-h", "t": "0 (imported)"}
    assert cost_cell(pd.Series({"rule": "prepare_cifar", "cost_h": float("nan")})) == ""
