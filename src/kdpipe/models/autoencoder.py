"""Symmetric image-to-image autoencoders and the pair that teach each other (seed: Proposed Experiment).

One autoencoder, input 3 x S x S (S divisible by 16), base width w (channels c_k = w * 2^(k-1)):

    encoder k (k = 1..4): conv 4x4 stride 2 pad 1 + BN + LeakyReLU(0.2)
        E1: w  x S/2  x S/2    E2: 2w x S/4 x S/4    E3: 4w x S/8 x S/8    E4: 8w x S/16 x S/16
    decoder j (j = 1..4), mirroring encoder 5 - j:
        expand:   transposed conv 2x2 stride 1 + BN + ReLU  ->  D_j: c_(5-j) x (n+1) x (n+1)
                  where n x n is the size of E_(5-j): the decoder-side map is one row and one
                  column larger than its encoder mirror, with the same channels (as in the seed)
        upsample: transposed conv 4x4 stride 2 pad 2 -> 2n x 2n
                  (+ BN + ReLU to c_(4-j) channels; the last one to 3 channels, then tanh)
        D1: 8w x (S/16+1)²   D2: 4w x (S/8+1)²   D3: 2w x (S/4+1)²   D4: w x (S/2+1)²

A matched pair (k, 5 - k) compares E_k of one network with adapter(D_(5-k)) of the other; the
adapter removes the extra row and column: ``maxpool`` (2x2, stride 1) or ``conv`` (2x2, stride 1,
padding 0, learned, channels kept).
"""

import torch
from torch import nn


def channels(width: int) -> list[int]:
    return [width * 2**k for k in range(4)]


class AutoEncoder(nn.Module):
    """Returns ``(output, encoder_maps, decoder_maps)``: E1..E4 and D1..D4 as in the module docstring."""

    def __init__(self, width: int = 32):
        super().__init__()
        c = channels(width)
        ins = [3] + c[:3]
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.Conv2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.2, inplace=True))
            for i, o in zip(ins, c)
        )
        self.expands, self.upsamples = nn.ModuleList(), nn.ModuleList()
        for j in range(1, 5):
            mirror = c[4 - j]  # channels of E_(5-j), which are also the channels arriving from below
            self.expands.append(nn.Sequential(
                nn.ConvTranspose2d(mirror, mirror, 2, 1, 0, bias=False), nn.BatchNorm2d(mirror), nn.ReLU(inplace=True)))
            if j < 4:
                nxt = c[3 - j]
                self.upsamples.append(nn.Sequential(
                    nn.ConvTranspose2d(mirror, nxt, 4, 2, 2, bias=False), nn.BatchNorm2d(nxt), nn.ReLU(inplace=True)))
            else:
                self.upsamples.append(nn.Sequential(nn.ConvTranspose2d(mirror, 3, 4, 2, 2), nn.Tanh()))

    def forward(self, x: torch.Tensor):
        enc = []
        for e in self.encoders:
            x = e(x)
            enc.append(x)
        dec = []
        for expand, up in zip(self.expands, self.upsamples):
            d = expand(x)
            dec.append(d)
            x = up(d)
        return x, enc, dec


def make_adapter(kind: str, channels_: int) -> nn.Module:
    if kind == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=1)
    if kind == "conv":
        return nn.Conv2d(channels_, channels_, kernel_size=2, stride=1, padding=0)
    raise ValueError(f"adapter must be maxpool or conv, got {kind!r}")


class AutoEncoderPair(nn.Module):
    """Net 1 translates X -> Y, net 2 translates Y -> X; each matched pair (k, 5 - k) has an adapter
    for each direction that ``match`` uses:

    * ``formula`` (the seed's equation): E_k of net 1 against adapter(D_(5-k)) of net 2;
    * ``prose`` (the seed's text): E_k of net 2 against adapter(D_(5-k)) of net 1;
    * ``both``: both of the above.
    """

    def __init__(self, width: int, pairs: list[tuple[int, int]], adapter: str | None, match: str = "formula"):
        super().__init__()
        if match not in ("formula", "prose", "both"):
            raise ValueError(f"match must be formula, prose or both, got {match!r}")
        for k, d in pairs:
            if not (1 <= k <= 4 and d == 5 - k):
                raise ValueError(f"pair ({k}, {d}) does not mirror: encoder k matches decoder 5 - k")
        self.xy, self.yx = AutoEncoder(width), AutoEncoder(width)
        self.pairs = [tuple(p) for p in pairs]
        self.directions = {"formula": ["formula"], "prose": ["prose"], "both": ["formula", "prose"]}[match]
        c = channels(width)
        self.adapters = nn.ModuleDict({
            f"{direction}_e{k}d{d}": make_adapter(adapter, c[k - 1]) for k, d in self.pairs for direction in self.directions
        })

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        """Returns ``(O1, O2, matched)``: O1 = net1(X) ~ Y, O2 = net2(Y) ~ X, and for every matched
        pair and direction ``{name: (encoder map, adapted decoder map)}``."""
        o1, enc1, dec1 = self.xy(x)
        o2, enc2, dec2 = self.yx(y)
        sides = {"formula": (enc1, dec2), "prose": (enc2, dec1)}
        matched = {}
        for k, d in self.pairs:
            for direction in self.directions:
                enc, dec = sides[direction]
                name = f"{direction}_e{k}d{d}"
                matched[name] = (enc[k - 1], self.adapters[name](dec[d - 1]))
        return o1, o2, matched


def build_pair(cfg: dict) -> AutoEncoderPair:
    """The pair a run config describes (its ``width`` and ``variant``)."""
    v = cfg["variant"]
    return AutoEncoderPair(cfg["width"], [tuple(p) for p in v["pairs"]], v.get("adapter"), v["match"])


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to the networks' range [-1, 1] (they end in tanh)."""
    return images.float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
