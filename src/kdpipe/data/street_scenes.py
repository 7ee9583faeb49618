"""Offline, deterministic paired street scenes in the Cityscapes format (see kdpipe.data.cityscapes).

Each scene is first a label map in Cityscapes trainIds: sky above a random horizon, buildings of
random widths and heights standing on it, a road narrowing towards a vanishing point, sidewalks
along it and buildings, vegetation or terrain beyond them, trees, poles (some carrying a traffic
sign or a traffic light), persons on the sidewalks and cars (now and then a truck) on the road,
drawn far to near. The photo renders the same map the way a camera might see it, not in palette
colours: a sky gradient, grey asphalt with lane markings, brownish or grey facades with
windows, textured greenery, coloured car bodies with windows, tyres and a shadow, clothed
persons, then lighting, a little blur and pixel noise. ``labels_rgb`` draws the ids in palette
colours. Every random number comes from one torch.Generator: same arguments, same bytes.
"""

import numpy as np
import torch
import torch.nn.functional as F

from kdpipe.data.cityscapes import ids_to_colours, save_pairs

ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR, TRUCK = (
    0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 13, 14,
)  # fmt: skip

_DRAWS_PER_SCENE = 512  # uniforms per scene; the object counts below are capped to fit

_CAR_COLOURS = [(0.70, 0.08, 0.08), (0.10, 0.20, 0.60), (0.85, 0.85, 0.85), (0.08, 0.08, 0.09),
                (0.55, 0.57, 0.60), (0.20, 0.35, 0.22), (0.85, 0.75, 0.30)]  # fmt: skip
_SHIRT_COLOURS = [(0.75, 0.20, 0.20), (0.20, 0.30, 0.65), (0.85, 0.85, 0.80), (0.15, 0.15, 0.15),
                  (0.30, 0.55, 0.30), (0.80, 0.60, 0.20)]  # fmt: skip
_SIGN_COLOURS = [(0.80, 0.10, 0.10), (0.10, 0.30, 0.80), (0.90, 0.80, 0.10)]


class _Draws:
    """Uniform numbers of one scene, pre-drawn from the torch.Generator."""

    def __init__(self, values: list[float]):
        self.values, self.i = values, 0

    def u(self, lo: float = 0.0, hi: float = 1.0) -> float:
        v = self.values[self.i]
        self.i += 1
        return lo + (hi - lo) * v

    def chance(self, p: float) -> bool:
        return self.u() < p

    def int(self, lo: int, hi: int) -> int:  # inclusive
        return lo + min(int(self.u() * (hi - lo + 1)), hi - lo)

    def pick(self, options: list):
        return options[self.int(0, len(options) - 1)]


class _Canvas:
    def __init__(self, size: int):
        self.size = size
        self.label = np.full((size, size), SKY, dtype=np.uint8)
        self.photo = np.empty((3, size, size), dtype=np.float32)

    def span(self, a: float, b: float) -> slice | None:
        lo, hi = max(0, int(round(a))), min(self.size, int(round(b)))
        return slice(lo, hi) if hi > lo else None

    def rect(self, y0, y1, x0, x1, cls: int, colour) -> tuple[slice, slice] | None:
        ys, xs = self.span(y0, y1), self.span(x0, x1)
        if ys is None or xs is None:
            return None
        self.label[ys, xs] = cls
        self.photo[:, ys, xs] = np.asarray(colour, dtype=np.float32)[:, None, None]
        return ys, xs

    def mask(self, m: np.ndarray, cls: int, colour) -> None:
        self.label[m] = cls
        self.photo[:, m] = np.asarray(colour, dtype=np.float32)[:, None]


def _facade(c: _Canvas, d: _Draws, ys: slice, xs: slice, colour: np.ndarray) -> None:
    """Windows: a grid of darker (or lit) rectangles on a facade region."""
    period = max(3, round(c.size / 9))
    ly = np.arange(ys.stop - ys.start)[:, None] + d.int(0, period - 1)
    lx = np.arange(xs.stop - xs.start)[None, :] + d.int(0, period - 1)
    windows = ((ly % period) * 2 >= period) & ((lx % period) * 2 >= period)
    glass = (0.72, 0.66, 0.45) if d.chance(0.2) else (0.16, 0.2, 0.26)
    c.photo[:, ys, xs] = np.where(windows, np.asarray(glass, np.float32)[:, None, None], colour[:, None, None])


def _building_colour(d: _Draws) -> np.ndarray:
    brown, grey = np.array([0.55, 0.42, 0.32], np.float32), np.array([0.55, 0.55, 0.57], np.float32)
    m = d.u()
    return (m * brown + (1 - m) * grey) * d.u(0.6, 1.25)


def _scene(size: int, d: _Draws) -> _Canvas:
    S = size
    c = _Canvas(S)
    pos = np.arange(S, dtype=np.float32) + 0.5
    h = int(round(S * d.u(0.32, 0.5)))  # horizon row: sky above, ground from here down

    # Sky: deeper blue at the top, paler towards the horizon.
    top = np.array([0.35, 0.55, 0.85], np.float32) * d.u(0.85, 1.1)
    low = np.array([0.78, 0.86, 0.95], np.float32) * d.u(0.9, 1.05)
    ramp = np.minimum(pos / max(h, 1), 1)
    c.photo[:] = (top[:, None] + (low - top)[:, None] * ramp[None])[:, :, None]

    # Ground: the road narrows towards a vanishing point on the horizon, sidewalks beside it.
    vx, bx = S * d.u(0.3, 0.7), S * d.u(0.3, 0.7)
    hw_top, hw_bottom, walk = S * 0.01, S * d.u(0.28, 0.5), S * d.u(0.12, 0.25)
    t = np.maximum((pos - h) / (S - h), 0)  # 0 at the horizon, 1 at the bottom row
    centre = vx + t * (bx - vx)
    hw = hw_top + t * (hw_bottom - hw_top)
    sw = hw + t * walk
    dx = np.abs(pos[None, :] - centre[:, None])
    ground = np.broadcast_to((np.arange(S) >= h)[:, None], (S, S))
    road = ground & (dx < hw[:, None])
    walkway = ground & ~road & (dx < sw[:, None])
    left = pos[None, :] < centre[:, None]
    for side in (left, ~left):
        beyond = ground & ~road & ~walkway & side
        kind = d.pick([BUILDING, BUILDING, VEGETATION, TERRAIN])
        if kind == BUILDING:
            colour = _building_colour(d)
            c.mask(beyond, BUILDING, colour)
            rows, cols = beyond.any(1).nonzero()[0], beyond.any(0).nonzero()[0]
            if len(rows):
                ys, xs = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
                before = c.photo[:, ys, xs].copy()
                _facade(c, d, ys, xs, colour)
                c.photo[:, ys, xs] = np.where(beyond[ys, xs], c.photo[:, ys, xs], before)
        elif kind == VEGETATION:
            c.mask(beyond, VEGETATION, np.array([0.18, 0.36, 0.12]) * d.u(0.7, 1.2))
        else:
            c.mask(beyond, TERRAIN, np.array([0.46, 0.50, 0.30]) * d.u(0.8, 1.15))
    c.mask(walkway, SIDEWALK, np.array([0.63, 0.61, 0.57]) * d.u(0.8, 1.1))
    grey = d.u(0.28, 0.45)
    shade = (0.85 + 0.25 * (1 - t))[:, None]  # asphalt looks lighter into the distance
    c.label[road] = ROAD
    asphalt = np.array([grey, grey, grey * 1.06], np.float32)[:, None, None] * shade[None]
    c.photo[:, road] = np.broadcast_to(asphalt, (3, S, S))[:, road]
    if d.chance(0.7):  # dashed centre line: in the photo only, the label says road
        dashes = road & (dx < max(0.5, 0.04 * S)) & (np.floor(t * 9) % 2 == 0)[:, None]
        c.photo[:, dashes] = np.array([0.85, 0.85, 0.8], np.float32)[:, None]

    # Buildings standing on the horizon, taller away from the vanishing point; gaps show sky.
    x = -S * d.u(0, 0.1)
    for _ in range(12):
        if x >= S:
            break
        w = S * d.u(0.1, 0.28)
        if d.chance(0.8):
            height = S * d.u(0.06, 0.22) + abs(x + w / 2 - vx) * d.u(0.3, 0.9)
            colour = _building_colour(d)
            spans = c.rect(h - height, h, x, x + w, BUILDING, colour)
            if spans:
                _facade(c, d, *spans, colour)
        x += w

    def at(y: float) -> tuple[float, float, float]:  # road centre, half width, sidewalk edge
        i = min(S - 1, max(0, int(y)))
        return float(centre[i]), float(hw[i]), float(sw[i])

    # Trees beyond the sidewalks (behind everything that stands on the ground).
    for _ in range(d.int(0, 3)):
        yb = h + (S - h) * d.u(0.0, 0.4)
        cx_road, _, edge = at(yb)
        cx = cx_road + (1 if d.chance(0.5) else -1) * (edge + S * d.u(0.02, 0.15))
        r = S * d.u(0.06, 0.13) * (0.7 + (yb - h) / (S - h))
        cy = yb - r * d.u(1.6, 2.8)
        trunk = max(1.0, r * 0.3)
        c.rect(cy, yb, cx - trunk / 2, cx + trunk / 2, VEGETATION, (0.33, 0.24, 0.15))
        ry = r * d.u(0.9, 1.3)
        crown = ((pos[:, None] - cy) / ry) ** 2 + ((pos[None, :] - cx) / r) ** 2 < 1
        c.mask(crown, VEGETATION, np.array([0.2, 0.4, 0.13]) * d.u(0.7, 1.2))

    # Things standing on the ground, drawn far (small yb) to near.
    things = []
    for _ in range(d.int(0, 3)):
        things.append((h + (S - h) * d.u(0.15, 0.9), "pole", d.u()))
    for _ in range(d.int(0, 3)):
        things.append((h + (S - h) * d.u(0.1, 0.95), "person", d.u()))
    for _ in range(d.int(0, 4)):
        things.append((h + (S - h) * d.u(0.12, 1.05), "car", d.u()))
    for yb, kind, side in sorted(things):
        cx_road, half, edge = at(yb)
        sign = 1 if side < 0.5 else -1
        depth = (yb - h) / (S - h)
        if kind == "pole":
            cx = cx_road + sign * (half + (edge - half) * d.u(0.6, 0.95))
            width = max(1.0, S / 40 * (0.5 + depth))
            top_y = yb - S * (0.2 + 0.35 * depth)
            c.rect(top_y, yb, cx - width / 2, cx + width / 2, POLE, (d.u(0.25, 0.5),) * 3)
            if d.chance(0.4):
                s = max(2.0, S * 0.06 * (0.5 + depth))
                c.rect(top_y - s / 2, top_y + s / 2, cx - s / 2, cx + s / 2, SIGN, d.pick(_SIGN_COLOURS))
            elif d.chance(0.4):
                w = max(1.0, width * 1.5)
                spans = c.rect(top_y, top_y + 2.5 * w, cx - w / 2, cx + w / 2, LIGHT, (0.12, 0.12, 0.1))
                if spans:
                    lamp = (0.9, 0.2, 0.1) if d.chance(0.5) else (0.2, 0.9, 0.3)
                    c.photo[:, spans[0].start, spans[1]] = np.array(lamp, np.float32)[:, None]
        elif kind == "person":
            cx = cx_road + sign * (half + (edge - half) * d.u(0.2, 0.8))
            height = S * (0.07 + 0.22 * depth) * d.u(0.85, 1.15)
            w = max(1.0, height * 0.35)
            c.rect(yb - height, yb, cx - w / 2, cx + w / 2, PERSON, (0.15, 0.15, 0.25))  # legs
            c.rect(yb - height, yb - 0.45 * height, cx - w / 2, cx + w / 2, PERSON, d.pick(_SHIRT_COLOURS))
            c.rect(yb - height, yb - 0.8 * height, cx - w / 2, cx + w / 2, PERSON, (0.8, 0.6, 0.5))  # head
        else:
            w = 2 * half * d.u(0.3, 0.5)
            cx = cx_road + half * d.u(-0.6, 0.6)
            truck = d.chance(0.12)
            height = w * (d.u(0.8, 1.1) if truck else d.u(0.45, 0.6))
            body = np.array(d.pick(_CAR_COLOURS)) * d.u(0.8, 1.1)
            cls = TRUCK if truck else CAR
            spans = c.rect(yb - height, yb, cx - w / 2, cx + w / 2, cls, body)
            if spans is None:
                continue
            c.rect(yb - height * 0.95, yb - height * 0.6, cx - w * 0.4, cx + w * 0.4, cls, (0.15, 0.18, 0.22))
            c.rect(yb - height * 0.15, yb, cx - w / 2, cx + w / 2, cls, (0.05, 0.05, 0.05))  # tyres
            below = int(round(yb))
            if below < S:  # shadow on the road just below the car
                shadow = c.label[below, spans[1]] == ROAD
                c.photo[:, below, spans[1]] *= np.where(shadow, np.float32(0.5), np.float32(1))
    return c


Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # photos, labels_rgb, label_ids


def _render(n: int, size: int, g: torch.Generator) -> Split:
    draws = torch.rand(n, _DRAWS_PER_SCENE, generator=g, dtype=torch.float64).tolist()
    ids_np = np.empty((n, size, size), dtype=np.uint8)
    photos_np = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        c = _scene(size, _Draws(draws[i]))
        ids_np[i], photos_np[i] = c.label, c.photo
    ids, photos = torch.from_numpy(ids_np), torch.from_numpy(photos_np)
    # Textures: lumpy greenery, fine grain everywhere else.
    coarse = F.interpolate(torch.rand(n, 1, size // 4, size // 4, generator=g), size=size, mode="bilinear", align_corners=False)
    fine = torch.rand(n, 1, size, size, generator=g)
    veg = (ids == VEGETATION)[:, None]
    photos = torch.where(veg, photos * (0.7 + 0.6 * (0.6 * coarse + 0.4 * fine)), photos * (0.95 + 0.1 * fine))
    # Lighting: brightness, a slight colour cast and a left-right gradient per scene.
    brightness = 0.75 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
    cast = 1 + 0.05 * torch.randn(n, 3, 1, 1, generator=g)
    slope = 0.4 * torch.rand(n, 1, 1, 1, generator=g) - 0.2
    across = torch.linspace(-0.5, 0.5, size)[None, None, None, :]
    photos = photos * brightness * cast * (1 + slope * across)
    # Camera: a little blur and sensor noise.
    blurred = F.avg_pool2d(photos, 3, stride=1, padding=1, count_include_pad=False)
    photos = 0.7 * photos + 0.3 * blurred + 0.025 * torch.randn(photos.shape, generator=g)
    photos = (photos * 255).round().clamp(0, 255).to(torch.uint8)
    return photos, ids_to_colours(ids), ids


def generate(num_train: int, num_test: int, size: int = 32, seed: int = 0) -> dict[str, Split]:
    """Return {"train": (photos, labels_rgb, label_ids), "test": (...)}; same arguments, same bytes.

    photos and labels_rgb are uint8 N x 3 x size x size, label_ids uint8 N x size x size in
    trainIds. ``size`` should be a multiple of 16 (at least 16).
    """
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an int of at least 16, got {size!r}")
    g = torch.Generator().manual_seed(int(seed))
    return {"train": _render(int(num_train), size, g), "test": _render(int(num_test), size, g)}


def prepare_street_scenes(params: dict, *, train_out, test_out) -> None:
    """Write the prepared train and test splits from the generator's keyword ``params``."""
    splits = generate(**params)
    for split, out in (("train", train_out), ("test", test_out)):
        save_pairs(out, *splits[split])
