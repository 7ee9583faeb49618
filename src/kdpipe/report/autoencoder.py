"""Report section 3: the Cityscapes autoencoder pair teaching each other, every variant."""

from pathlib import Path

import pandas as pd

from kdpipe.references import PIX2PIX_PHOTO_TO_LABEL_L1, PIX2PIX_SOURCE
from kdpipe.report.layout import fmt, heading, image, page, save, table, text

COLUMNS = ["variant", "pairs", "adapter", "alpha", "X→Y pixel acc", "X→Y mIoU", "Y→X L1", "Y→X PSNR dB", "Y→X SSIM"]


def _rows(summary: pd.DataFrame, when: str) -> list[list[str]]:
    rows = []
    for _, r in summary.iterrows():
        rows.append([r["variant"], r["pairs"], r["adapter"], f"{r['alpha']:g}"] + [
            fmt(r[f"{when}_{k}_mean"], r[f"{when}_{k}_std"]) for k in ("pixel_acc", "miou", "l1_yx", "psnr_yx", "ssim_yx")
        ])
    return rows


def verdict(summary: pd.DataFrame) -> str:
    by = summary.set_index("variant")
    if "baseline" not in by.index or len(by) < 2:
        return ""
    base = by.loc["baseline"]
    others = by.drop(index="baseline")
    best_seg = others["best_miou_mean"].idxmax()
    best_img = others["best_psnr_yx_mean"].idxmax()
    d_seg = others.loc[best_seg, "best_miou_mean"] - base["best_miou_mean"]
    d_img = others.loc[best_img, "best_psnr_yx_mean"] - base["best_psnr_yx_mean"]
    return (f"Photo→label: the best distilled variant, {best_seg}, is {d_seg:+.3f} mIoU from the baseline "
            f"({'better' if d_seg > 0 else 'NOT better'}). Label→photo: the best, {best_img}, is {d_img:+.2f} dB PSNR "
            f"from the baseline ({'better' if d_img > 0 else 'NOT better'}).")


def autoencoder_section(pdf, summary: pd.DataFrame, figures_dir: Path) -> None:
    first = summary.iloc[0]
    fig = page()
    heading(fig, "3 Autoencoders teaching each other (Cityscapes)")
    setup = (
        f"Data: {first['dataset']} ({first['dataset_source']}), {int(first['train_images']):,} training pairs of a street "
        f"photo X and its colour label map Y. Net 1 translates X→Y, net 2 Y→X; each has 4 encoders and 4 decoders, "
        f"encoder k mirrored by decoder 5−k, whose map is one row and one column larger: an adapter (2×2 max-pool "
        f"or 2×2 convolution, stride 1) removes them. Loss: (1−a)(‖O1−Y‖ + ‖O2−X‖) + a·Σ_pairs ‖O_enc_k − "
        f"adapter(O_dec_(5−k))‖ with the {first['norm'].upper()} norm (mean over elements), "
        f"{int(first['epochs'])} epochs, {int(first['params']):,} parameters per pair. Matching direction: "
        f"{first['match']} ({'encoders of X→Y against decoders of Y→X, as in the seed equation' if first['match'] == 'formula' else 'encoders of Y→X against decoders of X→Y, as in the seed prose' if first['match'] == 'prose' else 'both directions'}). "
        f"X→Y is scored as segmentation (predicted colours mapped to the nearest of the 19 class colours; pixel "
        f"accuracy, and IoU averaged over the classes that occur; void pixels ignored), Y→X as image quality (L1 on [0, 1], PSNR, SSIM). Best = the epoch with "
        f"the best X→Y mIoU. Mean ± std over {int(summary['seeds'].min())} seed(s)."
    )
    y = text(fig, 0.91, setup, size=9.5, width=100)
    for when, title in (("best", "Best epoch"), ("last", "Last epoch")):
        y = text(fig, y - 0.005, title, size=10, weight="bold")
        height = 0.025 * (len(summary) + 1)
        table(fig, [0.03, y - height, 0.94, height], COLUMNS, _rows(summary, when), size=6.5)
        y -= height + 0.015
    y = text(fig, y, "Result: " + verdict(summary), size=10, width=95, weight="bold")
    ref = PIX2PIX_PHOTO_TO_LABEL_L1
    y = text(fig, y - 0.005, f"Reference, not measured here — {PIX2PIX_SOURCE}: pixel accuracy {ref['pixel_acc']:.2f}, "
                             f"class IoU {ref['miou']:.2f} (FCN-score on real Cityscapes).", size=8.5, width=110,
             style="italic")
    image(fig, [0.08, 0.03, 0.84, y - 0.05], figures_dir / "autoencoder-losses.png")
    save(pdf, fig)
    variants = list(summary["variant"])
    for start in range(0, len(variants), 2):
        fig = page()
        heading(fig, "3 Autoencoders: pictures (predicted, true X, true Y)")
        for i, variant in enumerate(variants[start:start + 2]):
            top = 0.92 - i * 0.45
            for j, direction in enumerate(("x2y", "y2x")):
                image(fig, [0.02 + j * 0.49, top - 0.43, 0.47, 0.43], figures_dir / f"autoencoder-{variant}-{direction}.png")
        save(pdf, fig)
