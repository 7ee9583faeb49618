"""Cityscapes as paired street photos X and colour label maps Y, in the 19 train classes.

Prepared format (one file per split, written atomically, loaded with ``weights_only=True``)::

    {"photos":     uint8 N x 3 x H x W,   the street photo
     "labels_rgb": uint8 N x 3 x H x W,   the label map drawn in PALETTE colours (void black)
     "label_ids":  uint8 N x H x W,       trainIds 0..18, VOID = 255
     "classes":    CLASS_NAMES}

Two raw sources are read:

* pix2pix's ``cityscapes.tar.gz``: ``cityscapes/{train,val}/<n>.jpg`` (2975 + 500, read in
  numeric order 1, 2, ..., 10, ...), each a 512 x 256 JPEG with the photo in the left half
  and the gtFine colour label map in the right half. JPEG blurs the label colours, so the
  label half is resized bilinearly and every pixel is then mapped to the nearest Cityscapes
  colour (``colours_to_ids(..., include_void=True)``: the 19 train colours, black and the
  other void colours); ``labels_rgb`` is redrawn from those ids in clean palette colours.
* the official ``leftImg8bit_trainvaltest.zip`` and ``gtFine_trainvaltest.zip``:
  ``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` paired by that stem with
  ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (8-bit labelIds 0..33). Members are
  read straight from the zips (they are 11 GB); the labelIds are resized nearest-neighbour and
  mapped with ``LABEL_ID_TO_TRAIN_ID``.

In both, ``val`` is the test split (Cityscapes' test labels are not public) and every image is
resized to ``size x size`` (the photo bilinearly with antialiasing), as pix2pix's
``prepare_cityscapes_dataset.py`` does at 256 x 256. Images are decoded with PIL.
"""

import io
import os
import re
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from kdpipe.data.archive import ArchiveError, _check_member, describe, unreadable, unpacked, verify_placed
from kdpipe.io import atomic_save

CLASS_NAMES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)
VOID = 255

PALETTE = torch.tensor(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
        (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=torch.uint8,
)  # fmt: skip

# Colours of the ignored Cityscapes labels (cityscapesScripts labels.py) that gtFine colour maps
# use besides black; they are void too. (polegroup and license plate share pole's and car's
# colours and cannot be told apart, so they are left to those classes.)
VOID_COLOURS = torch.tensor(
    [
        (0, 0, 0),  # unlabeled, ego vehicle, rectification border, out of roi, static
        (111, 74, 0),  # dynamic
        (81, 0, 81),  # ground
        (250, 170, 160),  # parking
        (230, 150, 140),  # rail track
        (180, 165, 180),  # guard rail
        (150, 100, 100),  # bridge
        (150, 120, 90),  # tunnel
        (0, 0, 90),  # caravan
        (0, 0, 110),  # trailer
    ],
    dtype=torch.uint8,
)

# cityscapesScripts labels.py: labelId -> trainId. License plate (-1) has trainId -1 there;
# it never occurs in labelIds images and is ignored (255) here like every other void label.
LABEL_ID_TO_TRAIN_ID = {
    -1: 255, 0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255,
    7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4, 14: 255, 15: 255, 16: 255,
    17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

_CHUNK = 1 << 18  # pixels per step in colours_to_ids: bounds its working memory (~100 MB)


def _label_lut() -> torch.Tensor:
    lut = torch.full((256,), VOID, dtype=torch.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        if label_id >= 0:
            lut[label_id] = train_id
    return lut


def _colour_lut() -> torch.Tensor:
    lut = torch.zeros(256, 3, dtype=torch.uint8)  # every id but 0..18 (void) is black
    lut[:NUM_CLASSES] = PALETTE
    return lut


def colours_to_ids(rgb: torch.Tensor, include_void: bool = False) -> torch.Tensor:
    """Map uint8 ``[..., 3, H, W]`` colours to uint8 ``[..., H, W]`` ids of the nearest colour.

    Candidates are the 19 PALETTE colours; with ``include_void`` also black and the other
    official void colours (VOID_COLOURS), which map to VOID. Distance is squared RGB; ties go
    to the lower train id. Pixels are processed in chunks, so large batches stay cheap.
    """
    if rgb.dtype != torch.uint8 or rgb.ndim < 3 or rgb.shape[-3] != 3:
        raise ValueError(f"rgb must be uint8 [..., 3, H, W], got {rgb.dtype} {tuple(rgb.shape)}")
    colours, ids = PALETTE, torch.arange(NUM_CLASSES, dtype=torch.uint8)
    if include_void:
        colours = torch.cat([colours, VOID_COLOURS])
        ids = torch.cat([ids, torch.full((len(VOID_COLOURS),), VOID, dtype=torch.uint8)])
    c = colours.to(rgb.device, torch.float32)
    ids = ids.to(rgb.device)
    # argmin |p - c|^2 == argmin (|c|^2 - 2 p.c): every term is an integer below 2^24, so
    # float32 is exact and ties resolve exactly as with integer distances. Written out per
    # channel rather than as a matmul, which may run in reduced precision (TF32) on a GPU.
    c_sq, c2 = c.square().sum(1), 2 * c
    pixels = rgb.movedim(-3, -1).reshape(-1, 3)
    out = torch.empty(pixels.shape[0], dtype=torch.uint8, device=rgb.device)
    for start in range(0, pixels.shape[0], _CHUNK):
        p = pixels[start : start + _CHUNK].to(torch.float32)
        score = c_sq - p[:, 0:1] * c2[:, 0] - p[:, 1:2] * c2[:, 1] - p[:, 2:3] * c2[:, 2]
        out[start : start + _CHUNK] = ids[score.argmin(1)]
    return out.reshape(rgb.shape[:-3] + rgb.shape[-2:])


def ids_to_colours(ids: torch.Tensor) -> torch.Tensor:
    """Draw uint8 trainIds ``[..., H, W]`` as uint8 ``[..., 3, H, W]`` PALETTE colours (void black)."""
    if ids.dtype != torch.uint8:
        raise ValueError(f"ids must be uint8, got {ids.dtype}")
    return _colour_lut().to(ids.device)[ids.long()].movedim(-1, -3).contiguous()


def save_pairs(path: str | os.PathLike, photos: torch.Tensor, labels_rgb: torch.Tensor, label_ids: torch.Tensor) -> None:
    """Write one prepared split (format in the module docstring) atomically."""
    if photos.dtype != torch.uint8 or photos.ndim != 4 or photos.shape[1] != 3:
        raise ValueError(f"photos must be uint8 N x 3 x H x W, got {photos.dtype} {tuple(photos.shape)}")
    if labels_rgb.dtype != torch.uint8 or labels_rgb.shape != photos.shape:
        raise ValueError(
            f"labels_rgb must be uint8 of the photos' shape {tuple(photos.shape)}, "
            f"got {labels_rgb.dtype} {tuple(labels_rgb.shape)}"
        )
    n, _, h, w = photos.shape
    if label_ids.dtype != torch.uint8 or label_ids.shape != (n, h, w):
        raise ValueError(f"label_ids must be uint8 {n} x {h} x {w}, got {label_ids.dtype} {tuple(label_ids.shape)}")
    bad = (label_ids >= NUM_CLASSES) & (label_ids != VOID)
    if bad.any():
        raise ValueError(f"label_ids must be trainIds 0..{NUM_CLASSES - 1} or {VOID}, found {label_ids[bad].unique().tolist()}")
    atomic_save(
        {
            "photos": photos.contiguous(),
            "labels_rgb": labels_rgb.contiguous(),
            "label_ids": label_ids.contiguous(),
            "classes": list(CLASS_NAMES),
        },
        path,
    )


def load_pairs(path: str | os.PathLike) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# Decoding with PIL (a torchvision dependency): torchvision.io's decoders are deprecated since 0.29.
def _open_image(data: bytes, name) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ArchiveError(f"cannot decode {name}: {exc}") from exc
    return img


def _decode_rgb(data: bytes, name) -> torch.Tensor:
    """uint8 3 x H x W."""
    arr = np.asarray(_open_image(data, name).convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _decode_label_ids(data: bytes, name) -> torch.Tensor:
    """A one-channel labelIds image as uint8 1 x H x W; ids above 255 become 255 (void)."""
    arr = np.asarray(_open_image(data, name))
    if arr.ndim != 2:
        raise ArchiveError(f"{name}: expected a one-channel labelIds image, got shape {arr.shape}")
    return torch.from_numpy(np.minimum(arr, 255).astype(np.uint8))[None]


def _resize(img: torch.Tensor, size: int, interpolation: InterpolationMode, antialias: bool) -> torch.Tensor:
    if tuple(img.shape[-2:]) == (size, size):
        return img
    return TF.resize(img, [size, size], interpolation=interpolation, antialias=antialias)


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")


def _name_key(path: Path):
    # 1.jpg, 2.jpg, ..., 10.jpg in numeric order; other names after, alphabetically.
    return (0, int(path.stem), path.name) if path.stem.isdigit() else (1, 0, path.name)


def _read_pix2pix_split(folder: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    files = sorted(folder.glob("*.jpg"), key=_name_key)
    if not files:
        raise ArchiveError(f"{folder} holds no .jpg images")
    photos = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    ids = torch.empty(len(files), size, size, dtype=torch.uint8)
    for i, f in enumerate(files):
        img = _decode_rgb(f.read_bytes(), f)
        h, w = img.shape[-2:]
        if w != 2 * h:
            raise ArchiveError(f"{f}: expected photo | label side by side (width twice the height), got {w} x {h}")
        photos[i] = _resize(img[:, :, :h], size, InterpolationMode.BILINEAR, antialias=True)
        # Bilinear without antialiasing: smooths the JPEG noise over 2 x 2 pixels but blends
        # classes only where a boundary falls between the sampled pixels; the nearest colour
        # then snaps every pixel back to a class.
        label = _resize(img[:, :, h:], size, InterpolationMode.BILINEAR, antialias=False)
        ids[i] = colours_to_ids(label, include_void=True)
    return photos, ids_to_colours(ids), ids


def prepare_pix2pix(archive: str | os.PathLike, *, size: int, train_out, test_out, sha256: str | None = None,
                    record_sha256: str | os.PathLike | None = None) -> None:
    """Check pix2pix's cityscapes.tar.gz (a file placed by hand too) against ``sha256`` or the
    sha256 recorded at first use, unpack it (temporarily); write train and val (as test)."""
    _check_size(size)
    if sha256 or record_sha256:
        verify_placed(archive, sha256=sha256, record_sha256=record_sha256)
    with unpacked(archive) as extracted:
        folders = {split: extracted / "cityscapes" / split for split in ("train", "val")}
        missing = [f"cityscapes/{s}/" for s, f in folders.items() if not f.is_dir()]
        if missing:
            raise ArchiveError(f"{archive} does not contain {', '.join(missing)}: is it pix2pix's cityscapes.tar.gz?")
        # Read every image before writing anything: a bad image leaves no half-prepared set.
        splits = {split: _read_pix2pix_split(folder, size) for split, folder in folders.items()}
    for split, out in (("train", train_out), ("val", test_out)):
        save_pairs(out, *splits[split])


_PHOTO_RE = re.compile(r"^leftImg8bit/(train|val)/[^/]+/([^/]+)_leftImg8bit\.png$")
_LABEL_RE = re.compile(r"^gtFine/(train|val)/[^/]+/([^/]+)_gtFine_labelIds\.png$")


def _safe_names(zf: zipfile.ZipFile, archive: Path) -> list[str]:
    names = zf.namelist()
    for name in names:
        if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in PurePosixPath(name.replace("\\", "/")).parts:
            raise ArchiveError(f"refusing archive member {name!r} of {archive}: absolute or contains '..'")
        _check_member(name, archive.parent)
    return names


def _open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    if not zipfile.is_zipfile(path):
        what = describe(path)
        raise ArchiveError(
            f"{path} is not a zip archive: it is {what}" if what else
            f"{path} is not a readable zip archive (its end is missing: a download that stopped early?). "
            "Download it again from cityscapes-dataset.com and place it there."
        )
    return zipfile.ZipFile(path)


def _read_member(zf: zipfile.ZipFile, name: str, archive) -> bytes:
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise unreadable(archive, err) from err


def prepare_official(leftimg_zip, gtfine_zip, *, size: int, train_out, test_out) -> None:
    """Read the official leftImg8bit and gtFine zips in place; write train and val (as test)."""
    _check_size(size)
    leftimg_zip, gtfine_zip = Path(leftimg_zip), Path(gtfine_zip)
    lut = _label_lut()
    with _open_zip(leftimg_zip) as pz, _open_zip(gtfine_zip) as lz:
        photo_names = _safe_names(pz, leftimg_zip)
        label_names = _safe_names(lz, gtfine_zip)
        photos_by = {}
        for name in photo_names:
            if m := _PHOTO_RE.match(name):
                photos_by.setdefault(m.group(1), []).append((m.group(2), name))
        labels_by = {(m.group(1), m.group(2)): name for name in label_names if (m := _LABEL_RE.match(name))}
        plan = {}
        for split in ("train", "val"):
            entries = sorted(photos_by.get(split, []), key=lambda e: e[1])
            if not entries:
                raise ArchiveError(f"{leftimg_zip} holds no leftImg8bit/{split}/<city>/*_leftImg8bit.png photos")
            unmatched = [name for stem, name in entries if (split, stem) not in labels_by]
            if unmatched:
                more = f" (and {len(unmatched) - 5} more)" if len(unmatched) > 5 else ""
                raise ArchiveError(
                    f"no _gtFine_labelIds.png in {gtfine_zip} for {', '.join(unmatched[:5])}{more}"
                )
            plan[split] = [(name, labels_by[(split, stem)]) for stem, name in entries]
        # Read every image before writing anything.
        splits = {}
        for split, pairs in plan.items():
            photos = torch.empty(len(pairs), 3, size, size, dtype=torch.uint8)
            ids = torch.empty(len(pairs), size, size, dtype=torch.uint8)
            for i, (photo_name, label_name) in enumerate(pairs):
                photo = _decode_rgb(_read_member(pz, photo_name, leftimg_zip), photo_name)
                label = _decode_label_ids(_read_member(lz, label_name, gtfine_zip), label_name)
                if label.shape[-2:] != photo.shape[-2:]:
                    raise ArchiveError(
                        f"{label_name}: size {tuple(label.shape[-2:])} differs from its photo's {tuple(photo.shape[-2:])}"
                    )
                photos[i] = _resize(photo, size, InterpolationMode.BILINEAR, antialias=True)
                ids[i] = lut[_resize(label, size, InterpolationMode.NEAREST_EXACT, antialias=False)[0].long()]
            splits[split] = (photos, ids_to_colours(ids), ids)
    for split, out in (("train", train_out), ("val", test_out)):
        save_pairs(out, *splits[split])
