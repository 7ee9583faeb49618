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

    fetch(a.url, a.out, md5=a.md5 or None, sha256=a.sha256 or None, record_sha256=a.record_sha256)


def cmd_prepare_cifar(a):
    from kdpipe.data.cifar import prepare_cifar

    prepare_cifar(a.source, a.archive, train_out=a.train, test_out=a.test, md5=a.md5 or None)


def cmd_prepare_synthetic(a):
    from kdpipe.data.synthetic import prepare_synthetic

    prepare_synthetic(a.params, train_out=a.train, test_out=a.test)


def cmd_prepare_street_scenes(a):
    from kdpipe.data.street_scenes import prepare_street_scenes

    prepare_street_scenes(a.params, train_out=a.train, test_out=a.test)


def cmd_prepare_pix2pix(a):
    from kdpipe.data.cityscapes import prepare_pix2pix

    prepare_pix2pix(a.archive, size=a.size, train_out=a.train, test_out=a.test, sha256=a.sha256 or None,
                    record_sha256=a.record_sha256)


def cmd_prepare_cityscapes(a):
    from kdpipe.data.cityscapes import prepare_official

    prepare_official(a.leftimg, a.gtfine, size=a.size, train_out=a.train, test_out=a.test)


def cmd_train(a):
    from kdpipe.run_config import validate_run_config

    # A run config written by hand reaches the trainer directly: refuse a bad one before any work.
    validate_run_config(a.run_config, teacher_given=a.teacher is not None)
    if "import" in a.run_config:
        from kdpipe.run_config import RunConfigError

        raise RunConfigError("run config: import: this teacher is imported (classify.published_teachers); "
                             "run `kdpipe import-teacher` for it")
    from kdpipe.training.run import train

    m = train(
        a.run_config, train_path=a.train, test_path=a.test, teacher_path=a.teacher, model_path=a.model,
        metrics_path=a.metrics, history_path=a.history, resume_path=a.resume, threads=a.threads,
    )
    key = m["score"]
    print(f"{m['run']}: best {key} {m['best'][key]:.4g} (epoch {m['best']['epoch']}), "
          f"last {key} {m['last'][key]:.4g}, {m['wall_time_s']:.1f} s on {m['device']}")


def cmd_import_teacher(a):
    from kdpipe.run_config import RunConfigError, validate_run_config

    validate_run_config(a.run_config)
    if "import" not in a.run_config:
        raise RunConfigError("run config: import: this run trains its teacher; run `kdpipe train` for it")
    from kdpipe.training.imported import import_teacher

    m = import_teacher(a.run_config, archive=a.archive, sha256=a.sha256 or None, record_sha256=a.record_sha256,
                       train_path=a.train, test_path=a.test, model_path=a.model, metrics_path=a.metrics,
                       history_path=a.history, threads=a.threads)
    print(f"{m['run']}: imported {m['source']['member']} (checkpoint sha256 {m['checkpoint_sha256'][:12]}, its own "
          f"accuracy {m['checkpoint_accuracy']}); top1 {m['best']['top1']:.4g} on our test set")


def cmd_tables_kd(a):
    from kdpipe.tables.kd import kd_tables

    kd_tables(a.metrics, runs_csv=a.runs, summary_csv=a.summary, headline_json=a.headline,
              cost_metrics=a.cost_metrics or None)


def cmd_tables_sweep(a):
    from kdpipe.tables.sweep import sweep_tables

    sweep_tables(a.name, a.setting, a.metrics, a.reference, out_csv=a.out)


def cmd_figures_sweep(a):
    from kdpipe.figures.sweep import sweep_figures

    sweep_figures(a.table, a.out)


def cmd_tables_jobs(a):
    from kdpipe.tables.jobs import jobs_table

    jobs_table(a.benchmarks, a.metrics, out_csv=a.out)


def cmd_tables_self_distill(a):
    from kdpipe.tables.self_distill import self_distill_tables

    self_distill_tables(a.metrics, runs_csv=a.runs, summary_csv=a.summary, headline_json=a.headline)


def cmd_tables_reproduction(a):
    from kdpipe.tables.reproduction import reproduction_table

    reproduction_table(a.classify_metrics, a.self_distill_metrics, out_csv=a.out, headline_json=a.headline)


def cmd_figures_self_distill(a):
    from kdpipe.figures.self_distill import self_distill_figures

    self_distill_figures(a.summary, a.runs, a.histories, cost_png=a.cost, curves_png=a.curves)


def cmd_tables_autoencoder(a):
    from kdpipe.tables.autoencoder import autoencoder_tables

    autoencoder_tables(a.metrics, runs_csv=a.runs, summary_csv=a.summary, headline_json=a.headline)


def cmd_figures_autoencoder(a):
    from kdpipe.figures.autoencoder import autoencoder_figures

    autoencoder_figures(a.runs, a.models, a.histories, a.test, out_dir=a.out_dir)


def cmd_figures_kd(a):
    from kdpipe.figures.kd import kd_figures

    kd_figures(a.summary, a.runs, a.histories, out_dir=a.out_dir)


def cmd_report(a):
    from kdpipe.report.build import build_report

    build_report(out=a.out, name=a.name, tables_dir=a.tables, figures_dir=a.figures, sweeps=a.sweep)


def _schema_error_line(message: str) -> str:
    """Snakemake's multi-line schema message ("Error validating config file." ... "On instance[...]")
    as one line: the problem and the key."""
    lines = message.splitlines()
    problem = next((ln.removeprefix("ValidationError: ") for ln in lines if ln.startswith("ValidationError: ")), None)
    where = next((ln.removeprefix("On ").rstrip(":") for ln in lines if ln.startswith("On instance")), None)
    if problem is None or where is None:
        return " ".join(ln.strip() for ln in lines if ln.strip())
    return f"{lines[0].rstrip('.')}: {where}: {problem}"


def cmd_dvc_yaml(a):
    from snakemake.exceptions import WorkflowError

    from kdpipe.config_checks import ConfigError
    from kdpipe.dvc_stages import regenerate_command, render

    files = " + ".join(["config.yaml", *a.configfile])
    try:
        text = render(Path.cwd(), a.configfile)
    except ConfigError as err:
        sys.exit(f"kdpipe: {files}: {err}")
    except WorkflowError as err:  # the schema refused the config
        sys.exit(f"kdpipe: {files}: {_schema_error_line(str(err))}")
    if a.check:
        current = Path(a.out).read_text() if Path(a.out).exists() else ""
        if current != text:
            sys.exit(f"kdpipe: {a.out} does not match the workflow; regenerate it with "
                     f"`{regenerate_command(a.configfile)}`")
        print(f"{a.out} matches the workflow")
        return
    Path(a.out).write_text(text)
    print(f"wrote {a.out} ({text.count(chr(10))} lines) for config.yaml{''.join(' + ' + f for f in a.configfile)}")


def cmd_dvc_sync(a):
    from kdpipe.dvc_sync import describe, sync

    print(describe(sync(Path.cwd())))


def cmd_docs(a):
    from kdpipe.docs_tables import update

    stale = update(Path(), check=a.check)
    if a.check:
        if stale:
            sys.exit(f"kdpipe: {stale[0]} differs from the registries (kdpipe.methods, kdpipe.architectures); "
                     "regenerate its tables with `kdpipe docs`")
        print("docs match the registries")
        return
    print(f"rewrote {', '.join(map(str, stale))}" if stale else "docs already match the registries")


def _tables_parser(sub, name: str, help_: str, func) -> None:
    """The tables-* steps read metrics.json files and write a per-run and a summary table."""
    s = sub.add_parser(name, help=help_)
    s.add_argument("--metrics", required=True, nargs="+", type=Path)
    s.add_argument("--runs", required=True, type=Path, help="one row per run")
    s.add_argument("--summary", required=True, type=Path, help="mean ± std over seeds")
    s.add_argument("--headline", type=Path, help="the headline numbers as JSON (DVC metrics)")
    s.set_defaults(func=func)


def _sha256_args(s) -> None:
    # nargs="?": a rule passes `--sha256 {params.sha256:q}`, which Snakemake leaves empty when unset.
    s.add_argument("--sha256", nargs="?", default=None, help="published sha256 to enforce")
    s.add_argument("--record-sha256", type=Path, default=None,
                   help="file keeping the sha256 seen first (trust on first use); later files must match it")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdpipe", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("download", help="download a raw archive, verifying its md5")
    s.add_argument("--url", required=True)
    s.add_argument("--md5", default=None)
    _sha256_args(s)
    s.add_argument("--out", required=True, type=Path)
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("prepare-cifar", help="unpack a CIFAR python archive into prepared tensors")
    s.add_argument("--source", required=True, choices=["cifar10", "cifar100"])
    s.add_argument("--archive", required=True, type=Path)
    s.add_argument("--md5", default=None, help="the archive's md5, checked before it is unpacked (also when placed by hand)")
    s.add_argument("--train", required=True, type=Path, help="prepared train split to write")
    s.add_argument("--test", required=True, type=Path, help="prepared test split to write")
    s.set_defaults(func=cmd_prepare_cifar)

    s = sub.add_parser("prepare-synthetic", help="generate the offline CIFAR-shaped data set")
    s.add_argument("--params", required=True, type=_json, help="generator keyword arguments as JSON")
    s.add_argument("--train", required=True, type=Path, help="prepared train split to write")
    s.add_argument("--test", required=True, type=Path, help="prepared test split to write")
    s.set_defaults(func=cmd_prepare_synthetic)

    s = sub.add_parser("prepare-street-scenes", help="generate offline paired street scenes (photo, label map)")
    s.add_argument("--params", required=True, type=_json, help="generator keyword arguments as JSON")
    s.add_argument("--train", required=True, type=Path)
    s.add_argument("--test", required=True, type=Path)
    s.set_defaults(func=cmd_prepare_street_scenes)

    s = sub.add_parser("prepare-pix2pix", help="unpack pix2pix's cityscapes archive into prepared pairs")
    s.add_argument("--archive", required=True, type=Path)
    _sha256_args(s)
    s.add_argument("--size", required=True, type=int)
    s.add_argument("--train", required=True, type=Path)
    s.add_argument("--test", required=True, type=Path, help="from the archive's val/ split")
    s.set_defaults(func=cmd_prepare_pix2pix)

    s = sub.add_parser("prepare-cityscapes", help="prepare pairs from the official Cityscapes zips")
    s.add_argument("--leftimg", required=True, type=Path, help="leftImg8bit_trainvaltest.zip")
    s.add_argument("--gtfine", required=True, type=Path, help="gtFine_trainvaltest.zip")
    s.add_argument("--size", required=True, type=int)
    s.add_argument("--train", required=True, type=Path)
    s.add_argument("--test", required=True, type=Path, help="from the val split")
    s.set_defaults(func=cmd_prepare_cityscapes)

    s = sub.add_parser("train", help="train one run of any family (its run config names the family)")
    s.add_argument("--run-config", required=True, type=_json, help="the run's resolved config as JSON")
    s.add_argument("--train", required=True, type=Path)
    s.add_argument("--test", required=True, type=Path)
    s.add_argument("--teacher", type=Path, nargs="?", default=None, help="the teacher's model.pt (KD runs)")
    s.add_argument("--model", required=True, type=Path)
    s.add_argument("--metrics", required=True, type=Path)
    s.add_argument("--history", required=True, type=Path)
    s.add_argument("--resume", required=True, type=Path, help="per-epoch checkpoint to resume from")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("import-teacher", help="import a published teacher checkpoint from its archive, check it "
                       "against the kdpipe model, evaluate it and write the teacher run's outputs")
    s.add_argument("--run-config", required=True, type=_json, help="the teacher run's config (with its import block)")
    s.add_argument("--archive", required=True, type=Path, help="the teacher source's archive (downloaded or placed)")
    _sha256_args(s)
    s.add_argument("--train", required=True, type=Path, help="prepared train split (normalisation statistics)")
    s.add_argument("--test", required=True, type=Path)
    s.add_argument("--model", required=True, type=Path)
    s.add_argument("--metrics", required=True, type=Path)
    s.add_argument("--history", required=True, type=Path)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_import_teacher)

    _tables_parser(sub, "tables-kd", "KD tables from the runs' metrics.json files", cmd_tables_kd)
    sub.choices["tables-kd"].add_argument(
        "--cost-metrics", nargs="*", type=Path, default=[],
        help="every training run's metrics.json (all families: jobs that overlapped on a GPU share it); "
             "default: the --metrics files")

    s = sub.add_parser("tables-sweep", help="one sweep's table (classify.sweeps): mean ± std over seeds at each "
                       "value of its setting, per pair and method, and the student alone as its reference")
    s.add_argument("--name", required=True, help="the sweep's name (its key in classify.sweeps)")
    s.add_argument("--setting", required=True, help="what it sweeps: <method>.<key> (e.g. kd_soft.temperature) "
                   "or train_subset")
    s.add_argument("--metrics", required=True, nargs="+", type=Path, help="the sweep points' metrics.json files")
    s.add_argument("--reference", nargs="*", type=Path, default=[],
                   help="the student-alone runs' metrics.json files (a setting sweep's reference)")
    s.add_argument("--out", required=True, type=Path, help="results/tables/sweep_<name>.csv")
    s.set_defaults(func=cmd_tables_sweep)

    s = sub.add_parser("figures-sweep", help="one sweep's line chart: top-1 against the swept value, per pair")
    s.add_argument("--table", required=True, type=Path, help="the sweep's table (kdpipe tables-sweep)")
    s.add_argument("--out", required=True, type=Path, help="results/figures/sweep_<name>.png")
    s.set_defaults(func=cmd_figures_sweep)

    s = sub.add_parser("tables-jobs", help="each job's wall time and peak memory from benchmark files")
    s.add_argument("--benchmarks", nargs="*", type=Path, default=[], help="Snakemake benchmark files")
    s.add_argument("--metrics", nargs="*", type=Path, default=[], help="where training jobs ran")
    s.add_argument("--out", required=True, type=Path)
    s.set_defaults(func=cmd_tables_jobs)

    s = sub.add_parser("figures-kd", help="KD bar charts and test-accuracy curves")
    s.add_argument("--summary", required=True, type=Path)
    s.add_argument("--runs", required=True, type=Path)
    s.add_argument("--histories", required=True, nargs="+", type=Path)
    s.add_argument("--out-dir", required=True, type=Path)
    s.set_defaults(func=cmd_figures_kd)

    _tables_parser(sub, "tables-self-distill", "self-distillation tables from metrics.json files", cmd_tables_self_distill)

    s = sub.add_parser("tables-reproduction", help="ours against every published number: mean ± sd over seeds, "
                       "95%% t-interval, the source's epoch convention, the gap (from metrics.json files)")
    s.add_argument("--classify-metrics", nargs="*", type=Path, default=[], help="the classifiers' metrics.json files")
    s.add_argument("--self-distill-metrics", nargs="*", type=Path, default=[],
                   help="the multi-exit runs' metrics.json files")
    s.add_argument("--out", required=True, type=Path, help="the gap table (CSV)")
    s.add_argument("--headline", type=Path, help="the gaps as JSON (DVC metrics)")
    s.set_defaults(func=cmd_tables_reproduction)

    s = sub.add_parser("figures-self-distill", help="accuracy against cost, and per-exit curves")
    s.add_argument("--summary", required=True, type=Path)
    s.add_argument("--runs", required=True, type=Path)
    s.add_argument("--histories", required=True, nargs="+", type=Path)
    s.add_argument("--cost", required=True, type=Path, help="PNG: accuracy against multiply-accumulates")
    s.add_argument("--curves", required=True, type=Path, help="PNG: test accuracy of every exit per epoch")
    s.set_defaults(func=cmd_figures_self_distill)

    _tables_parser(sub, "tables-autoencoder", "autoencoder-pair tables from metrics.json files", cmd_tables_autoencoder)

    s = sub.add_parser("figures-autoencoder", help="picture grids for every variant and direction, loss curves")
    s.add_argument("--runs", required=True, type=Path)
    s.add_argument("--models", required=True, nargs="+", type=Path)
    s.add_argument("--histories", required=True, nargs="+", type=Path)
    s.add_argument("--test", required=True, type=Path, help="prepared validation pairs")
    s.add_argument("--out-dir", required=True, type=Path)
    s.set_defaults(func=cmd_figures_autoencoder)

    s = sub.add_parser("dvc-yaml", help="write dvc.yaml from the workflow (one stage per data set, family, "
                       "tables, figures, report)")
    s.add_argument("--configfile", nargs="*", default=[], help="config overlays, as given to snakemake")
    s.add_argument("--out", default="dvc.yaml")
    s.add_argument("--check", action="store_true", help="fail if the file differs from what would be written")
    s.set_defaults(func=cmd_dvc_yaml)

    s = sub.add_parser("dvc-sync", help="after `dvc pull`: mark outputs that match dvc.lock up to date for "
                       "Snakemake, remove those that do not")
    s.set_defaults(func=cmd_dvc_sync)

    s = sub.add_parser("docs", help="rewrite the tables in docs/*.md (and README.md) that restate the method "
                       "and architecture registries")
    s.add_argument("--check", action="store_true", help="fail, naming the page, if a page differs from what would "
                   "be written")
    s.set_defaults(func=cmd_docs)

    s = sub.add_parser("report", help="assemble results/report.pdf from tables and figures")
    s.add_argument("--name", required=True, help="the preset's name, for the title page")
    s.add_argument("--tables", required=True, type=Path)
    s.add_argument("--figures", required=True, type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--sweep", action="append", default=[], metavar="NAME",
                   help="a sweep of classify.sweeps to show (repeatable): reads sweep_NAME.csv and sweep_NAME.png")
    s.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from kdpipe.errors import InputError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as err:
        # Expected (a download, an archive, a model file): the message says what to do; no traceback.
        print(f"kdpipe: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
