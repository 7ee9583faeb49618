"""kdpipe.data.cityscapes and kdpipe.data.street_scenes: palette, id mappings, the offline
generator, and preparation from archives built here in the real pix2pix and official layouts."""

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from kdpipe.data import cityscapes as cs
from kdpipe.data.archive import ArchiveError, fetch
from kdpipe.data.street_scenes import generate, prepare_street_scenes

# Written out independently of the module (cityscapesScripts labels.py): trainId per labelId 0..33.
OFFICIAL_TRAIN_IDS = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18]


# ----------------------------------------------------------------------------- palette and ids


def test_palette_and_class_names():
    assert cs.VOID == 255
    assert len(cs.CLASS_NAMES) == 19 and cs.CLASS_NAMES[0] == "road" and cs.CLASS_NAMES[18] == "bicycle"
    assert cs.CLASS_NAMES[6] == "traffic light" and cs.CLASS_NAMES[13] == "car"
    assert cs.PALETTE.dtype == torch.uint8 and cs.PALETTE.shape == (19, 3)
    spot = {0: (128, 64, 128), 1: (244, 35, 232), 2: (70, 70, 70), 5: (153, 153, 153), 8: (107, 142, 35),
            10: (70, 130, 180), 11: (220, 20, 60), 13: (0, 0, 142), 14: (0, 0, 70), 18: (119, 11, 32)}  # fmt: skip
    for train_id, colour in spot.items():
        assert tuple(cs.PALETTE[train_id].tolist()) == colour, cs.CLASS_NAMES[train_id]
    assert len({tuple(c) for c in cs.PALETTE.tolist()}) == 19


def test_label_id_to_train_id_is_the_official_mapping():
    assert len(OFFICIAL_TRAIN_IDS) == 34
    assert cs.LABEL_ID_TO_TRAIN_ID == {-1: 255, **dict(enumerate(OFFICIAL_TRAIN_IDS))}
    assert cs.LABEL_ID_TO_TRAIN_ID[7] == 0 and cs.LABEL_ID_TO_TRAIN_ID[26] == 13 and cs.LABEL_ID_TO_TRAIN_ID[23] == 10


def _pixels(colours) -> torch.Tensor:
    """A list of RGB triples as a uint8 3 x 1 x K image."""
    return torch.tensor(colours, dtype=torch.uint8).T[:, None, :]


@pytest.mark.parametrize("include_void", [False, True])
def test_colours_to_ids_exact_on_palette(include_void):
    ids = cs.colours_to_ids(cs.PALETTE.T[:, None, :].contiguous(), include_void=include_void)
    assert ids.dtype == torch.uint8 and ids.shape == (1, 19)
    assert ids[0].tolist() == list(range(19))


def test_colours_to_ids_nearest_on_perturbed_colours():
    cases = {(125, 66, 130): 0, (240, 40, 228): 1, (73, 68, 72): 2, (66, 133, 177): 10, (148, 247, 155): 9,
             (5, 3, 137): 13, (0, 4, 74): 14, (250, 6, 3): 12, (110, 140, 40): 8, (215, 215, 8): 7}  # fmt: skip
    for include_void in (False, True):
        got = cs.colours_to_ids(_pixels(list(cases)), include_void=include_void)[0].tolist()
        assert got == list(cases.values())


def test_black_is_void_only_with_include_void():
    dark = [(0, 0, 0), (6, 5, 4)]
    assert cs.colours_to_ids(_pixels(dark), include_void=True)[0].tolist() == [255, 255]
    without = cs.colours_to_ids(_pixels(dark), include_void=False)[0].tolist()
    assert without == [14, 14]  # nearest palette colour to black is truck (0, 0, 70)


def _reference_ids(rgb: torch.Tensor) -> torch.Tensor:
    d = (rgb.movedim(-3, -1)[..., None, :].long() - cs.PALETTE.long()).pow(2).sum(-1)
    return d.argmin(-1).to(torch.uint8)


def test_colours_to_ids_on_batches_in_chunks(monkeypatch):
    rgb = torch.randint(0, 256, (2, 4, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = cs.colours_to_ids(rgb, include_void=False)
    assert whole.shape == (2, 4, 5, 7) and whole.dtype == torch.uint8
    assert torch.equal(whole, _reference_ids(rgb))
    monkeypatch.setattr(cs, "_CHUNK", 7)
    assert torch.equal(cs.colours_to_ids(rgb, include_void=False), whole)
    with pytest.raises(ValueError, match="uint8"):
        cs.colours_to_ids(rgb.float())


def test_ids_to_colours_round_trip():
    ids = torch.randint(0, 19, (3, 6, 9), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    ids[:, 0, :] = 255
    rgb = cs.ids_to_colours(ids)
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 3, 6, 9)
    assert rgb[:, :, 0, :].eq(0).all()  # void is black
    assert torch.equal(rgb[1, :, 2, 3], cs.PALETTE[int(ids[1, 2, 3])])
    assert torch.equal(cs.colours_to_ids(rgb, include_void=True), ids)


def test_save_pairs_validates_and_round_trips(tmp_path):
    ids = torch.tensor([[[0, 255], [13, 10]]], dtype=torch.uint8)
    photos = torch.full((1, 3, 2, 2), 7, dtype=torch.uint8)
    cs.save_pairs(tmp_path / "s.pt", photos, cs.ids_to_colours(ids), ids)
    data = cs.load_pairs(tmp_path / "s.pt")
    assert data["classes"] == cs.CLASS_NAMES
    assert torch.equal(data["photos"], photos) and torch.equal(data["label_ids"], ids)
    assert torch.equal(data["labels_rgb"], cs.ids_to_colours(ids))
    with pytest.raises(ValueError, match="photos"):
        cs.save_pairs(tmp_path / "bad.pt", photos.float(), cs.ids_to_colours(ids), ids)
    with pytest.raises(ValueError, match="labels_rgb"):
        cs.save_pairs(tmp_path / "bad.pt", photos, cs.ids_to_colours(ids)[:, :, :1], ids)
    with pytest.raises(ValueError, match="label_ids"):
        cs.save_pairs(tmp_path / "bad.pt", photos, cs.ids_to_colours(ids), ids.long())
    with pytest.raises(ValueError, match="19"):
        cs.save_pairs(tmp_path / "bad.pt", photos, cs.ids_to_colours(ids), ids.clone().fill_(19))
    assert not (tmp_path / "bad.pt").exists()


# ----------------------------------------------------------------------------- street scenes


def test_street_scenes_are_deterministic_paired_scenes():
    a, b = generate(24, 8, size=32, seed=0), generate(24, 8, size=32, seed=0)
    other = generate(24, 8, size=32, seed=1)
    for split, n in (("train", 24), ("test", 8)):
        photos, labels_rgb, ids = a[split]
        assert photos.dtype == labels_rgb.dtype == ids.dtype == torch.uint8
        assert photos.shape == labels_rgb.shape == (n, 3, 32, 32) and ids.shape == (n, 32, 32)
        assert all(torch.equal(x, y) for x, y in zip(a[split], b[split]))
        assert not torch.equal(photos, other[split][0]) and not torch.equal(ids, other[split][2])
        assert torch.equal(labels_rgb, cs.ids_to_colours(ids))
        assert ((ids < 19) | (ids == 255)).all()
        # The photo is a rendering, not the palette drawing.
        assert (photos.float() - labels_rgb.float()).abs().mean() > 20
    assert not torch.equal(a["train"][0][:8], a["test"][0])
    ids = a["train"][2]
    present = set(ids.unique().tolist())
    assert {0, 1, 2, 8, 10, 13} <= present and len(present) >= 8
    assert all(len(img.unique()) >= 4 for img in ids)  # every scene has several classes
    # The photo follows the label map: sky is brighter and bluer than road.
    photos = a["train"][0].float()
    sky, road = ids == 10, ids == 0
    sky_rgb = torch.stack([photos[:, c][sky].mean() for c in range(3)])
    road_rgb = torch.stack([photos[:, c][road].mean() for c in range(3)])
    assert sky_rgb.sum() > road_rgb.sum() + 60 and sky_rgb[2] > sky_rgb[0] + 30


def test_street_scenes_at_64_and_prepare(tmp_path):
    photos, labels_rgb, ids = generate(3, 2, size=64, seed=5)["train"]
    assert photos.shape == (3, 3, 64, 64) and ids.shape == (3, 64, 64)
    params = {"num_train": 5, "num_test": 3, "size": 32, "seed": 2}
    prepare_street_scenes(params, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    expected = generate(**params)
    for split in ("train", "test"):
        data = cs.load_pairs(tmp_path / f"{split}.pt")
        assert data["classes"] == cs.CLASS_NAMES
        assert torch.equal(data["photos"], expected[split][0])
        assert torch.equal(data["labels_rgb"], expected[split][1])
        assert torch.equal(data["label_ids"], expected[split][2])


# ----------------------------------------------------------------------------- pix2pix archive


def _jpeg(img: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tf.addfile(info, io.BytesIO(data))


def _pix2pix_archive(path: Path, scenes: dict, extra: dict[str, bytes] = ()) -> Path:
    """cityscapes/{train,val}/<n>.jpg: 512 x 256, photo | label, from 32 x 32 scenes blown up 8x."""
    with tarfile.open(path, "w:gz") as tf:
        for split, (photos, labels_rgb, _) in scenes.items():
            for i in range(len(photos)):
                pair = torch.cat([photos[i], labels_rgb[i]], dim=-1)  # 3 x 32 x 64
                pair = pair.repeat_interleave(8, dim=-1).repeat_interleave(8, dim=-2)  # 3 x 256 x 512
                _add(tf, f"cityscapes/{split}/{i + 1}.jpg", _jpeg(pair))
        for name, data in dict(extra).items():
            _add(tf, name, data)
    return path


def _uniform_interior(ids: torch.Tensor) -> torch.Tensor:
    """Pixels whose 3 x 3 neighbourhood holds one class."""
    padded = torch.nn.functional.pad(ids.long()[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0].long()
    n, h, w = ids.shape
    same = torch.ones_like(ids, dtype=torch.bool)
    for dy in range(3):
        for dx in range(3):
            same &= padded[:, dy : dy + h, dx : dx + w] == ids.long()
    return same


def test_prepare_pix2pix_from_a_served_archive(http_server, tmp_path):
    scenes = generate(10, 2, size=32, seed=7)
    scenes = {"train": scenes["train"], "val": scenes["test"]}
    _pix2pix_archive(http_server.root / "cityscapes.tar.gz", scenes)
    archive = fetch(http_server.url("cityscapes.tar.gz"), tmp_path / "raw" / "cityscapes.tar.gz")
    cs.prepare_pix2pix(archive, size=32, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["cityscapes.tar.gz"]  # unpacked copy removed
    for split, out in (("train", "train.pt"), ("val", "test.pt")):
        data = cs.load_pairs(tmp_path / out)
        true_photos, _, true_ids = scenes[split]
        n = len(true_ids)
        assert data["photos"].shape == data["labels_rgb"].shape == (n, 3, 32, 32)
        assert data["label_ids"].shape == (n, 32, 32) and data["label_ids"].dtype == torch.uint8
        assert data["classes"] == cs.CLASS_NAMES
        assert torch.equal(data["labels_rgb"], cs.ids_to_colours(data["label_ids"]))
        # The photo comes from the left half, in file-number order (1, 2, ..., 10).
        err = (data["photos"][:, None].float() - true_photos[None].float()).abs().mean(dim=(2, 3, 4))
        assert err.argmin(1).tolist() == list(range(n))
        assert err.diagonal().max() < 15
        # Labels recovered from the JPEG-compressed right half match inside uniform regions.
        interior = _uniform_interior(true_ids)
        assert interior.float().mean() > 0.4
        agree = (data["label_ids"] == true_ids)[interior].float().mean()
        assert agree > 0.9, f"only {agree:.1%} of interior label pixels recovered"
        assert (data["label_ids"] == true_ids).float().mean() > 0.95  # and at boundaries, mostly


def test_prepare_pix2pix_refuses_a_hostile_archive(tmp_path):
    scenes = generate(1, 1, size=32, seed=0)
    (tmp_path / "raw").mkdir()
    archive = _pix2pix_archive(
        tmp_path / "raw" / "cityscapes.tar.gz", {"train": scenes["train"], "val": scenes["test"]}, {"../evil": b"pwned"}
    )
    with pytest.raises(ArchiveError, match="evil"):
        cs.prepare_pix2pix(archive, size=32, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    assert not (tmp_path / "raw" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (tmp_path / "train.pt").exists() and not (tmp_path / "test.pt").exists()


def test_prepare_pix2pix_without_val_folder(tmp_path):
    archive = _pix2pix_archive(tmp_path / "cityscapes.tar.gz", {"train": generate(1, 0, size=32)["train"]})
    with pytest.raises(ArchiveError, match="cityscapes/val"):
        cs.prepare_pix2pix(archive, size=32, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    assert not (tmp_path / "train.pt").exists()


# ----------------------------------------------------------------------------- official zips

# Stems in the official naming; each image gets its own photo colour and car position.
STEMS = {"train": ["aachen_000000_000019", "bochum_000001_000042"], "val": ["frankfurt_000000_000294"]}


def _png(array: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.numpy()).save(buf, format="PNG")
    return buf.getvalue()


def _label_ids(k: int) -> torch.Tensor:
    """32 x 64 labelIds; every block is aligned to 2 rows x 4 columns, so any nearest
    downsampling to 16 x 16 keeps it exactly."""
    lab = torch.full((32, 64), 7, dtype=torch.uint8)  # road
    lab[:8] = 23  # sky
    lab[8:16, :32] = 11  # building
    lab[8:16, 32:48] = 0  # unlabeled
    lab[8:16, 48:] = 50  # not a Cityscapes id
    lab[16:20, :8] = 24  # person
    lab[20:28, 8 + 16 * k : 24 + 16 * k] = 26  # car
    return lab


def _photo_colour(k: int) -> tuple[int, int, int]:
    return (40 + 60 * k, 200 - 50 * k, 90 + 7 * k)


def _official_zips(tmp_path: Path, extra_photos=(), extra_labels=()) -> tuple[Path, Path]:
    photos, labels, k = {}, {}, 0
    for split, stems in STEMS.items():
        for stem in stems:
            city = stem.split("_")[0]
            photo = torch.tensor(_photo_colour(k), dtype=torch.uint8).view(1, 1, 3).expand(32, 64, 3).contiguous()
            photos[f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"] = _png(photo)
            base = f"gtFine/{split}/{city}/{stem}_gtFine"
            labels[f"{base}_labelIds.png"] = _png(_label_ids(k))
            labels[f"{base}_color.png"] = _png(torch.zeros(32, 64, 3, dtype=torch.uint8))
            labels[f"{base}_instanceIds.png"] = _png(torch.zeros(32, 64, dtype=torch.uint8))
            labels[f"{base}_polygons.json"] = b"{}"
            k += 1
    # The test split has photos but no public labels: it must be ignored, not refused.
    photos["leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png"] = photos[next(iter(photos))]
    photos.update(dict(extra_photos))
    labels.update(dict(extra_labels))
    paths = []
    for name, members in (("leftImg8bit_trainvaltest.zip", photos), ("gtFine_trainvaltest.zip", labels)):
        path = tmp_path / "raw" / name
        path.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(path, "w") as zf:
            for member in reversed(list(members)):  # stored out of order on purpose
                zf.writestr(member, members[member])
        paths.append(path)
    return tuple(paths)


def test_prepare_official_pairs_resizes_and_maps_train_ids(tmp_path):
    left, gt = _official_zips(tmp_path)
    cs.prepare_official(left, gt, size=16, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    lut = torch.tensor([*OFFICIAL_TRAIN_IDS] + [255] * (256 - 34), dtype=torch.uint8)
    k = 0
    for split, out in (("train", "train.pt"), ("val", "test.pt")):
        data = cs.load_pairs(tmp_path / out)
        n = len(STEMS[split])
        assert data["photos"].shape == data["labels_rgb"].shape == (n, 3, 16, 16)
        assert data["label_ids"].shape == (n, 16, 16) and data["label_ids"].dtype == torch.uint8
        assert torch.equal(data["labels_rgb"], cs.ids_to_colours(data["label_ids"]))
        assert list(data["label_ids"].flatten().unique().tolist()) == [0, 2, 10, 11, 13, 255]
        for i in range(n):  # sorted by name, each photo with its own label
            expected = lut[_label_ids(k).reshape(16, 2, 16, 4)[:, 0, :, 0].long()]
            assert torch.equal(data["label_ids"][i], expected), f"{split} {i}"
            ids = data["label_ids"][i]
            assert ids[0, 0] == 10 and ids[15, 15] == 0 and ids[5, 1] == 2  # sky, road, building
            assert ids[5, 9] == 255 and ids[5, 14] == 255  # unlabeled and unknown ids are void
            assert ids[11, 2 + 4 * k] == 13 and ids[8, 0] == 11  # car, person
            colour = torch.tensor(_photo_colour(k), dtype=torch.int16).view(3, 1, 1)
            assert (data["photos"][i].to(torch.int16) - colour).abs().max() <= 1
            k += 1


def test_prepare_official_names_a_photo_without_label(tmp_path):
    orphan = {"leftImg8bit/train/cologne/cologne_000000_000001_leftImg8bit.png": _png(torch.zeros(32, 64, 3, dtype=torch.uint8))}
    left, gt = _official_zips(tmp_path, extra_photos=orphan)
    with pytest.raises(ArchiveError, match="cologne_000000_000001_leftImg8bit.png"):
        cs.prepare_official(left, gt, size=16, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    assert not (tmp_path / "train.pt").exists() and not (tmp_path / "test.pt").exists()


@pytest.mark.parametrize("which", ["photos", "labels"])
def test_prepare_official_refuses_traversal_members(tmp_path, which):
    evil = {"../evil.png": _png(torch.zeros(4, 4, dtype=torch.uint8))}
    left, gt = _official_zips(tmp_path, **{f"extra_{which}": evil})
    with pytest.raises(ArchiveError, match=r"\.\./evil\.png"):
        cs.prepare_official(left, gt, size=16, train_out=tmp_path / "train.pt", test_out=tmp_path / "test.pt")
    assert not (tmp_path / "train.pt").exists() and not (tmp_path / "test.pt").exists()
    assert not (tmp_path / "evil.png").exists()
