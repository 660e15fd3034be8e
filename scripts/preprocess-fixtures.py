"""Writes tests/fixtures/preprocess/: non-square images, transformers' image processors'
configs (CLIP, SigLIP, DINOv2's BiT processor; PIL backends) and what those processors make
of the images, for tests/tests/preprocess_parity.rs to compare Condenser's preprocessing with.

Run once with transformers and Pillow installed (no torch needed):
    python scripts/preprocess-fixtures.py
The sizes are small (32 and 48 px inputs) to keep the fixtures small; the code paths are the
ones a 224 px tower takes.
"""
import json
import os

import numpy as np
from PIL import Image
from transformers import BitImageProcessor, CLIPImageProcessor, SiglipImageProcessor

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "preprocess")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def picture(w, h, seed):
    """Smooth gradients, a disc and a bar with hard edges: what photos and shapes have."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([255 * x / w, 255 * y / h, 128 + 100 * np.sin(x / 3 + y / 5)], -1)
    cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, min(w, h) / 4
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.randint(0, 255, 3)
    img[int(h * 0.1):int(h * 0.2), :] = [250, 250, 20]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def expand2square(img, background):
    """LLaVA's padding to a square (llava/mm_utils.py)."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    out = Image.new(img.mode, (side, side), background)
    out.paste(img, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    images = {"landscape.png": picture(45, 30, 1), "portrait.png": picture(30, 52, 2)}
    for name, img in images.items():
        img.save(os.path.join(OUT, name))
    processors = {
        "clip": (CLIPImageProcessor(size={"shortest_edge": 32},
                                    crop_size={"height": 32, "width": 32}), 32),
        "clip-up": (CLIPImageProcessor(size={"shortest_edge": 48},
                                       crop_size={"height": 48, "width": 48}), 48),
        "siglip": (SiglipImageProcessor(size={"height": 32, "width": 32}), 32),
        "dinov2": (BitImageProcessor(size={"shortest_edge": 37},
                                     crop_size={"height": 32, "width": 32},
                                     image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD), 32),
    }
    cases = []
    for key, (proc, size) in processors.items():
        config = f"{key}.json"
        with open(os.path.join(OUT, config), "w") as f:
            f.write(proc.to_json_string())
        for pad in [False, True] if key == "clip" else [False]:
            for name, img in images.items():
                src = img
                if pad:
                    src = expand2square(img, tuple(int(x * 255) for x in proc.image_mean))
                px = proc(images=src, return_tensors="np")["pixel_values"][0]
                assert px.shape == (3, size, size), px.shape
                out = f"{key}{'-pad' if pad else ''}-{name[:-4]}.f32"
                px.astype("<f4").tofile(os.path.join(OUT, out))
                cases.append({"config": config, "image": name, "size": size,
                              "pad_to_square": pad, "pixels": out})
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"{len(cases)} cases in {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
