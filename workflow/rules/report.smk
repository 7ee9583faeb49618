# metrics.json → tables (pandas) → figures (matplotlib) → results/report.pdf


rule tables_kd:
    input:
        metrics=family_outputs("classify", "metrics.json"),
        # What each run cost: jobs of every family that overlapped on one GPU share it (kdpipe.tables.cost).
        cost=[f for family in ("classify", "self_distill", "autoencoder")
              for f in family_outputs(family, "metrics.json", sweep_points=True)],
    output:
        runs=report("results/tables/kd_runs.csv", category="Tables", labels={"table": "KD runs"}),
        summary=report("results/tables/kd_summary.csv", category="Tables", labels={"table": "KD mean ± std"}),
        headline="results/tables/kd_metrics.json",  # dvc metrics show
    log:
        "results/logs/tables_kd.log",
    benchmark:
        "results/benchmarks/tables_kd.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["report"],
    shell:
        "kdpipe tables-kd --metrics {input.metrics:q} --cost-metrics {input.cost:q} --runs {output.runs:q} --summary {output.summary:q} --headline {output.headline:q} > {log:q} 2>&1"


rule tables_self_distill:
    input:
        metrics=family_outputs("self_distill", "metrics.json"),
    output:
        runs=report("results/tables/self_distill_runs.csv", category="Tables", labels={"table": "BYOT runs"}),
        summary=report(
            "results/tables/self_distill_summary.csv", category="Tables", labels={"table": "BYOT per exit"}
        ),
        headline="results/tables/self_distill_metrics.json",  # dvc metrics show
    log:
        "results/logs/tables_self_distill.log",
    benchmark:
        "results/benchmarks/tables_self_distill.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["report"],
    shell:
        "kdpipe tables-self-distill --metrics {input.metrics:q} --runs {output.runs:q} --summary {output.summary:q} --headline {output.headline:q} "
        "> {log:q} 2>&1"


rule tables_autoencoder:
    input:
        metrics=family_outputs("autoencoder", "metrics.json"),
    output:
        runs=report("results/tables/autoencoder_runs.csv", category="Tables", labels={"table": "AE runs"}),
        summary=report(
            "results/tables/autoencoder_summary.csv", category="Tables", labels={"table": "AE per variant"}
        ),
        headline="results/tables/autoencoder_metrics.json",  # dvc metrics show
    log:
        "results/logs/tables_autoencoder.log",
    benchmark:
        "results/benchmarks/tables_autoencoder.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["report"],
    shell:
        "kdpipe tables-autoencoder --metrics {input.metrics:q} --runs {output.runs:q} --summary {output.summary:q} --headline {output.headline:q} "
        "> {log:q} 2>&1"


rule tables_reproduction:
    input:
        classify=family_outputs("classify", "metrics.json"),
        self_distill=family_outputs("self_distill", "metrics.json"),
    output:
        table=report(
            "results/tables/reproduction.csv", category="Tables", labels={"table": "ours vs published"}
        ),
        headline="results/tables/reproduction_metrics.json",  # dvc metrics show
    log:
        "results/logs/tables_reproduction.log",
    benchmark:
        "results/benchmarks/tables_reproduction.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["report"],
    shell:
        "kdpipe tables-reproduction --classify-metrics {input.classify:q} --self-distill-metrics {input.self_distill:q} "
        "--out {output.table:q} --headline {output.headline:q} > {log:q} 2>&1"


rule tables_jobs:
    input:
        metrics=[f for family in ("classify", "self_distill", "autoencoder")
                 for f in family_outputs(family, "metrics.json", sweep_points=True)],
    output:
        report("results/tables/jobs.csv", category="Tables", labels={"table": "jobs"}),
    params:
        # Read when present, not required: a missing benchmark (results copied without them,
        # data placed by hand) must not make Snakemake rerun the job that would write it.
        # (the command skips those that do not exist when it runs)
        benchmarks=data_benchmarks() + training_benchmarks(),
    log:
        "results/logs/tables_jobs.log",
    benchmark:
        "results/benchmarks/tables_jobs.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["report"],
    shell:
        "kdpipe tables-jobs --benchmarks {params.benchmarks:q} --metrics {input.metrics:q} --out {output:q} > {log:q} 2>&1"


# One table job and one chart job per sweep (classify.sweeps), defined in a loop rather than with
# a {sweep} wildcard: rules without wildcards and with plain inputs are what the stale-results
# sweep (kdpipe.stale) watches, so a sweep's table never outlives a failed point.
for _sweep in SWEEPS.values():

    rule:
        name:
            f"tables_sweep_{_sweep['name']}"
        input:
            points=sweep_metrics(SWEEP_RUNS[_sweep["name"]]["points"]),
            reference=sweep_metrics(SWEEP_RUNS[_sweep["name"]]["reference"]),
        output:
            report(sweep_table(_sweep["name"]), category="Sweeps", labels={"table": f"sweep {_sweep['name']}"}),
        params:
            name=_sweep["name"],
            setting=_sweep["setting"],
        log:
            plan.log_path(f"tables_sweep_{_sweep['name']}"),
        benchmark:
            plan.benchmark_path(f"tables_sweep_{_sweep['name']}")
        conda:
            "../../envs/kdpipe.yaml"
        threads: 1
        resources:
            **RESOURCES["report"],
        shell:
            "kdpipe tables-sweep --name {params.name:q} --setting {params.setting:q} --metrics {input.points:q} "
            "--reference {input.reference:q} --out {output:q} > {log:q} 2>&1"

    rule:
        name:
            f"figures_sweep_{_sweep['name']}"
        input:
            sweep_table(_sweep["name"]),
        output:
            report(sweep_figure(_sweep["name"]), category="Sweeps"),
        log:
            plan.log_path(f"figures_sweep_{_sweep['name']}"),
        benchmark:
            plan.benchmark_path(f"figures_sweep_{_sweep['name']}")
        conda:
            "../../envs/kdpipe.yaml"
        threads: 1
        resources:
            **RESOURCES["report"],
        shell:
            "kdpipe figures-sweep --table {input:q} --out {output:q} > {log:q} 2>&1"


rule figures_kd:
    input:
        summary="results/tables/kd_summary.csv",
        runs="results/tables/kd_runs.csv",
        histories=family_outputs("classify", "history.csv"),
    output:
        report(kd_figures(), category="Knowledge distillation"),
    params:
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    log:
        "results/logs/figures_kd.log",
    benchmark:
        "results/benchmarks/figures_kd.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["report"],
    shell:
        "kdpipe figures-kd --summary {input.summary:q} --runs {input.runs:q} --histories {input.histories:q} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule figures_self_distill:
    input:
        summary="results/tables/self_distill_summary.csv",
        runs="results/tables/self_distill_runs.csv",
        histories=family_outputs("self_distill", "history.csv"),
    output:
        cost=report("results/figures/self_distill-cost.png", category="Self-distillation"),
        curves=report("results/figures/self_distill-curves.png", category="Self-distillation"),
    log:
        "results/logs/figures_self_distill.log",
    benchmark:
        "results/benchmarks/figures_self_distill.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["report"],
    shell:
        "kdpipe figures-self-distill --summary {input.summary:q} --runs {input.runs:q} --histories {input.histories:q} "
        "--cost {output.cost:q} --curves {output.curves:q} > {log:q} 2>&1"


rule figures_autoencoder:
    input:
        runs="results/tables/autoencoder_runs.csv",
        models=family_outputs("autoencoder", "model.pt"),
        histories=family_outputs("autoencoder", "history.csv"),
        test=f"data/prepared/{AE_DATA['name']}/test.pt",
    output:
        report(AE_FIGURES, category="Autoencoders"),
    params:
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    log:
        "results/logs/figures_autoencoder.log",
    benchmark:
        "results/benchmarks/figures_autoencoder.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["report"],
    shell:
        "kdpipe figures-autoencoder --runs {input.runs:q} --models {input.models:q} --histories {input.histories:q} "
        "--test {input.test:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule report:
    input:
        tables=[
            "results/tables/kd_runs.csv",
            "results/tables/kd_summary.csv",
            "results/tables/self_distill_runs.csv",
            "results/tables/self_distill_summary.csv",
            "results/tables/autoencoder_runs.csv",
            "results/tables/autoencoder_summary.csv",
            "results/tables/jobs.csv",
            "results/tables/reproduction.csv",
        ],
        figures=kd_figures() + SELF_DISTILL_FIGURES + AE_FIGURES,
        sweep_tables=[sweep_table(name) for name in SWEEPS],
        sweep_figures=[sweep_figure(name) for name in SWEEPS],
    output:
        report("results/report.pdf", category="Report"),
    params:
        name=config["name"],
        sweeps=[word for name in SWEEPS for word in ("--sweep", name)],
        tables_dir=lambda wc, input: os.path.dirname(input.tables[0]),
        figures_dir=lambda wc, input: os.path.dirname(input.figures[0]),
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["report"],
    shell:
        "kdpipe report --name {params.name:q} --tables {params.tables_dir:q} --figures {params.figures_dir:q} "
        "{params.sweeps:q} --out {output:q} > {log:q} 2>&1"
