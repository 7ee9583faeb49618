# metrics.json → tables (pandas) → figures (matplotlib) → results/report.pdf


rule tables_kd:
    input:
        metrics=classify_outputs("metrics.json"),
    output:
        runs=report("results/tables/kd_runs.csv", category="Tables", labels={"table": "KD runs"}),
        summary=report("results/tables/kd_summary.csv", category="Tables", labels={"table": "KD mean ± std"}),
    log:
        "results/logs/tables_kd.log",
    benchmark:
        "results/benchmarks/tables_kd.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    shell:
        "kdpipe tables-kd --metrics {input.metrics} --runs {output.runs} --summary {output.summary} > {log} 2>&1"


rule tables_jobs:
    input:
        benchmarks=data_benchmarks() + classify_benchmarks(),
        metrics=classify_outputs("metrics.json"),
    output:
        report("results/tables/jobs.csv", category="Tables", labels={"table": "jobs"}),
    log:
        "results/logs/tables_jobs.log",
    benchmark:
        "results/benchmarks/tables_jobs.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    shell:
        "kdpipe tables-jobs --benchmarks {input.benchmarks} --metrics {input.metrics} --out {output} > {log} 2>&1"


rule figures_kd:
    input:
        summary="results/tables/kd_summary.csv",
        runs="results/tables/kd_runs.csv",
        histories=classify_outputs("history.csv"),
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
    shell:
        "kdpipe figures-kd --summary {input.summary} --runs {input.runs} --histories {input.histories} "
        "--out-dir {params.out_dir} > {log} 2>&1"


rule report:
    input:
        tables=["results/tables/kd_runs.csv", "results/tables/kd_summary.csv", "results/tables/jobs.csv"],
        figures=kd_figures(),
    output:
        report("results/report.pdf", category="Report"),
    params:
        name=config["name"],
        tables_dir=lambda wc, input: os.path.dirname(input.tables[0]),
        figures_dir=lambda wc, input: os.path.dirname(input.figures[0]),
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    shell:
        "kdpipe report --name {params.name:q} --tables {params.tables_dir} --figures {params.figures_dir} "
        "--out {output} > {log} 2>&1"
