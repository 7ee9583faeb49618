# Raw data → data/prepared/<set>/{train,test}.pt


rule download_cifar:
    output:
        archive="data/raw/{dataset}/{archive}",
    params:
        url=lambda wc: dataset_entry(wc)["url"],
        md5=lambda wc: dataset_entry(wc)["md5"],
    log:
        "results/logs/download_cifar/{dataset}-{archive}.log",
    benchmark:
        "results/benchmarks/download_cifar/{dataset}-{archive}.tsv"
    wildcard_constraints:
        dataset=alternatives(CIFAR_SETS),
        archive=r"[^/]+\.tar\.gz",
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    shell:
        "kdpipe download --url {params.url:q} --md5 {params.md5} --out {output.archive} > {log} 2>&1"


rule prepare_cifar:
    input:
        archive=raw_archive,
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        source=lambda wc: dataset_entry(wc)["source"],
    log:
        "results/logs/prepare_cifar/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_cifar/{dataset}.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    wildcard_constraints:
        dataset=alternatives(CIFAR_SETS),
    shell:
        "kdpipe prepare-cifar --source {params.source} --archive {input.archive} "
        "--train {output.train} --test {output.test} > {log} 2>&1"


rule prepare_synthetic:
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        generator=lambda wc: json.dumps(
            {k: v for k, v in dataset_entry(wc).items() if k != "source"}, sort_keys=True
        ),
    log:
        "results/logs/prepare_synthetic/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_synthetic/{dataset}.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    wildcard_constraints:
        dataset=alternatives(SYNTHETIC_SETS),
    shell:
        "kdpipe prepare-synthetic --params {params.generator:q} "
        "--train {output.train} --test {output.test} > {log} 2>&1"
