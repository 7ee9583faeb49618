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
    resources:
        **RESOURCES["data"],
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
    resources:
        **RESOURCES["data"],
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
    resources:
        **RESOURCES["data"],
    wildcard_constraints:
        dataset=alternatives(SYNTHETIC_SETS),
    shell:
        "kdpipe prepare-synthetic --params {params.generator:q} "
        "--train {output.train} --test {output.test} > {log} 2>&1"


# Cityscapes pairs (photo X, colour label map Y) for the autoencoder family.


rule prepare_street_scenes:
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        generator=lambda wc: json.dumps(
            {k: AE_DATA[k] for k in ("num_train", "num_test", "size", "seed") if k in AE_DATA}, sort_keys=True
        ),
    log:
        "results/logs/prepare_street_scenes/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_street_scenes/{dataset}.tsv"
    wildcard_constraints:
        dataset=alternatives(AE_SETS["synthetic"]),
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe prepare-street-scenes --params {params.generator:q} "
        "--train {output.train} --test {output.test} > {log} 2>&1"


rule download_pix2pix:
    output:
        archive="data/raw/{dataset}/{archive}",
    params:
        url=AE_DATA.get("url", ""),
        sha256=f"--sha256 {AE_DATA['sha256']}" if AE_DATA.get("sha256") else "",
        # No checksum is published: the first download's sha256 is kept here and enforced later.
        record=lambda wc: f"data/raw/{wc.dataset}/{wc.archive}.sha256",
    log:
        "results/logs/download_pix2pix/{dataset}-{archive}.log",
    benchmark:
        "results/benchmarks/download_pix2pix/{dataset}-{archive}.tsv"
    wildcard_constraints:
        dataset=alternatives(AE_SETS["pix2pix"]),
        archive=r"[^/]+\.tar\.gz",
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe download --url {params.url:q} {params.sha256} --record-sha256 {params.record} "
        "--out {output.archive} > {log} 2>&1"


rule prepare_pix2pix:
    input:
        archive=lambda wc: f"data/raw/{wc.dataset}/{archive_name(wc.dataset)}",
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        size=AE_DATA["size"],
    log:
        "results/logs/prepare_pix2pix/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_pix2pix/{dataset}.tsv"
    wildcard_constraints:
        dataset=alternatives(AE_SETS["pix2pix"]),
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe prepare-pix2pix --archive {input.archive} --size {params.size} "
        "--train {output.train} --test {output.test} > {log} 2>&1"


rule prepare_cityscapes:
    input:
        # Placed by the user: downloading them needs a login at cityscapes-dataset.com.
        leftimg="data/raw/{dataset}/leftImg8bit_trainvaltest.zip",
        gtfine="data/raw/{dataset}/gtFine_trainvaltest.zip",
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        size=AE_DATA["size"],
    log:
        "results/logs/prepare_cityscapes/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_cityscapes/{dataset}.tsv"
    wildcard_constraints:
        dataset=alternatives(AE_SETS["official"]),
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe prepare-cityscapes --leftimg {input.leftimg} --gtfine {input.gtfine} --size {params.size} "
        "--train {output.train} --test {output.test} > {log} 2>&1"
