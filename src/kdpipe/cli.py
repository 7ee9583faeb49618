"""The ``kdpipe`` command: one subcommand per pipeline step, so every step runs by hand too."""

import argparse
import json
import sys
from pathlib import Path


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None


def cmd_download(a):
    from kdpipe.data.archive import fetch

    fetch(a.url, a.out, md5=a.md5 or None)


def cmd_prepare_cifar(a):
    from kdpipe.data.cifar import prepare_cifar

    prepare_cifar(a.source, a.archive, train_out=a.train, test_out=a.test)


def cmd_prepare_synthetic(a):
    from kdpipe.data.synthetic import prepare_synthetic

    prepare_synthetic(a.params, train_out=a.train, test_out=a.test)


def cmd_train_classifier(a):
    from kdpipe.training.run import train_classifier

    m = train_classifier(
        a.run_config, train_path=a.train, test_path=a.test, teacher_path=a.teacher, model_path=a.model,
        metrics_path=a.metrics, history_path=a.history, resume_path=a.resume, threads=a.threads,
    )
    print(f"{m['run']}: best top1 {m['best']['top1']:.2f} (epoch {m['best']['epoch']}), "
          f"last top1 {m['last']['top1']:.2f}, {m['wall_time_s']:.1f} s on {m['device']}")


def cmd_tables_kd(a):
    from kdpipe.tables import kd_tables

    kd_tables(a.metrics, runs_csv=a.runs, summary_csv=a.summary)


def cmd_tables_jobs(a):
    from kdpipe.tables import jobs_table

    jobs_table(a.benchmarks, a.metrics, out_csv=a.out)


def cmd_figures_kd(a):
    from kdpipe.figures import kd_figures

    kd_figures(a.summary, a.runs, a.histories, out_dir=a.out_dir)


def cmd_report(a):
    from kdpipe.report import build_report

    build_report(out=a.out, name=a.name, tables_dir=a.tables, figures_dir=a.figures)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdpipe", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("download", help="download a raw archive, verifying its md5")
    s.add_argument("--url", required=True)
    s.add_argument("--md5", default=None)
    s.add_argument("--out", required=True, type=Path)
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("prepare-cifar", help="unpack a CIFAR python archive into prepared tensors")
    s.add_argument("--source", required=True, choices=["cifar10", "cifar100"])
    s.add_argument("--archive", required=True, type=Path)
    s.add_argument("--train", required=True, type=Path, help="prepared train split to write")
    s.add_argument("--test", required=True, type=Path, help="prepared test split to write")
    s.set_defaults(func=cmd_prepare_cifar)

    s = sub.add_parser("prepare-synthetic", help="generate the offline CIFAR-shaped data set")
    s.add_argument("--params", required=True, type=_json, help="generator keyword arguments as JSON")
    s.add_argument("--train", required=True, type=Path, help="prepared train split to write")
    s.add_argument("--test", required=True, type=Path, help="prepared test split to write")
    s.set_defaults(func=cmd_prepare_synthetic)

    s = sub.add_parser("train-classifier", help="train one classifier run (teacher, alone or distilled)")
    s.add_argument("--run-config", required=True, type=_json, help="the run's resolved config as JSON")
    s.add_argument("--train", required=True, type=Path)
    s.add_argument("--test", required=True, type=Path)
    s.add_argument("--teacher", type=Path, default=None, help="the teacher's model.pt (KD runs)")
    s.add_argument("--model", required=True, type=Path)
    s.add_argument("--metrics", required=True, type=Path)
    s.add_argument("--history", required=True, type=Path)
    s.add_argument("--resume", required=True, type=Path, help="per-epoch checkpoint to resume from")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_train_classifier)

    s = sub.add_parser("tables-kd", help="KD tables from the runs' metrics.json files")
    s.add_argument("--metrics", required=True, nargs="+", type=Path)
    s.add_argument("--runs", required=True, type=Path, help="one row per run")
    s.add_argument("--summary", required=True, type=Path, help="mean ± std over seeds")
    s.set_defaults(func=cmd_tables_kd)

    s = sub.add_parser("tables-jobs", help="each job's wall time and peak memory from benchmark files")
    s.add_argument("--benchmarks", required=True, nargs="+", type=Path)
    s.add_argument("--metrics", nargs="*", type=Path, default=[], help="where training jobs ran")
    s.add_argument("--out", required=True, type=Path)
    s.set_defaults(func=cmd_tables_jobs)

    s = sub.add_parser("figures-kd", help="KD bar charts and test-accuracy curves")
    s.add_argument("--summary", required=True, type=Path)
    s.add_argument("--runs", required=True, type=Path)
    s.add_argument("--histories", required=True, nargs="+", type=Path)
    s.add_argument("--out-dir", required=True, type=Path)
    s.set_defaults(func=cmd_figures_kd)

    s = sub.add_parser("report", help="assemble results/report.pdf from tables and figures")
    s.add_argument("--name", required=True, help="the preset's name, for the title page")
    s.add_argument("--tables", required=True, type=Path)
    s.add_argument("--figures", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
