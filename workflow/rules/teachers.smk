# Published teachers (classify.published_teachers): a teacher run whose architecture names a source
# under teacher_sources is imported from that source's archive instead of trained. It writes the
# same results/<set>/classify/teacher-<arch>-s<seed>/{model.pt, metrics.json, history.csv} the train
# rule writes for a trained teacher (whose `run` wildcard excludes these runs), so students and
# tables read it unchanged.

# Downloads need the network: run them where Snakemake runs (a SLURM login node), not as cluster jobs.
localrules:
    download_teachers,


rule download_teachers:
    output:
        archive=f"{plan.TEACHER_ARCHIVES}/{{source}}.tar",
    params:
        url=lambda wc: config["teacher_sources"][wc.source]["url"],
        # Empty when unset: the command then reads no published checksum.
        sha256=lambda wc: config["teacher_sources"][wc.source].get("sha256") or "",
        # No checksum is published: the first download's sha256 is kept here and enforced later.
        record=lambda wc, output: f"{output.archive}.sha256",
    log:
        "results/logs/download_teachers/{source}.log",
    benchmark:
        "results/benchmarks/download_teachers/{source}.tsv"
    wildcard_constraints:
        source=alternatives(TEACHER_SOURCES),
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe download --url {params.url:q} --sha256 {params.sha256:q} --record-sha256 {params.record:q} "
        "--out {output.archive:q} > {log:q} 2>&1"


rule import_teacher:
    input:
        unpack(imported_inputs),
    output:
        model="results/{dataset}/{family}/{run}/model.pt",
        metrics="results/{dataset}/{family}/{run}/metrics.json",
        history="results/{dataset}/{family}/{run}/history.csv",
    params:
        run=run_config_json,
        # Checked again before the member is read (the archive may have been placed by hand): the
        # configured sha256, else the one recorded at first use (recorded now if placed by hand).
        sha256=lambda wc: config["teacher_sources"][run_config(wc)["import"]["source"]].get("sha256") or "",
        record=lambda wc, input: f"{input.archive}.sha256",
    log:
        "results/logs/import_teacher/{dataset}-{family}-{run}.log",
    benchmark:
        "results/benchmarks/import_teacher/{dataset}-{family}-{run}.tsv"
    wildcard_constraints:
        dataset=alternatives(USED_DATASETS),
        family="classify",
        run=alternatives(IMPORTED_RUNS),
    threads: 2
    resources:
        **RESOURCES["data"],
    conda:
        "../../envs/kdpipe.yaml"
    shell:
        "kdpipe import-teacher --run-config {params.run:q} --threads {threads:q} "
        "--archive {input.archive:q} --sha256 {params.sha256:q} --record-sha256 {params.record:q} "
        "--train {input.train:q} --test {input.test:q} "
        "--model {output.model:q} --metrics {output.metrics:q} --history {output.history:q} > {log:q} 2>&1"
