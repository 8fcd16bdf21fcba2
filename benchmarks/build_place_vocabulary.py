"""Build the ORB vocabulary of mapping.places (assets/place_vocabulary.npz) from generated rooms.

Rooms 300000+ (neither the held-out 100000-100019 nor the validation 200000+ used to tune place recognition);
every 30th frame of a 150-frame walk. Words: k-means (cv2.kmeans, k-means++) on the descriptors' unpacked bits,
centres rounded back to bits (the k-majority of Grana et al., 2013); idf = log(images / images with the word).

    PYTHONPATH=$PWD python benchmarks/build_place_vocabulary.py [--rooms 40] [--words 1024]
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from m2hmx.data.synthetic import SyntheticSource
from mapping.places import VOCABULARY, PlaceConfig, Vocabulary, describe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rooms", type=int, default=40)
    p.add_argument("--words", type=int, default=1024)
    p.add_argument("--max-descriptors", type=int, default=120_000)
    p.add_argument("--out", default=str(VOCABULARY))
    args = p.parse_args(argv)
    cfg = PlaceConfig()
    t0 = time.time()
    per_image = []
    for seed in range(300000, 300000 + args.rooms):
        src = SyntheticSource(seed, frames=150)
        for i in range(0, 150, 30):
            gray = cv2.cvtColor(src[i].rgb, cv2.COLOR_RGB2GRAY)
            per_image.append(describe(gray, cfg)[1])
    desc = np.concatenate(per_image)
    rng = np.random.default_rng(0)
    sample = desc[rng.permutation(len(desc))[:args.max_descriptors]]
    bits = np.unpackbits(sample, axis=1).astype(np.float32)
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 15, 0.01)
    _, _, centres = cv2.kmeans(bits, args.words, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    words = np.packbits(centres > 0.5, axis=1)
    vocab = Vocabulary(words, np.ones(len(words)))
    seen = np.zeros(len(words))
    for d in per_image:
        seen[np.unique(vocab.quantize(d))] += 1
    vocab = Vocabulary(words, np.log(len(per_image) / np.maximum(seen, 1)))
    vocab.save(args.out)
    print(f"{len(per_image)} images, {len(desc)} descriptors ({len(sample)} clustered) -> {len(words)} words, "
          f"{int((seen == 0).sum())} unused; {time.time() - t0:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
