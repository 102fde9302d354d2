"""Regenerate assets/images/: 256x256 crops of public-domain / CC0 photos shipped by scikit-image.

    python assets/make_images.py          # needs scikit-image==0.26.0 (the `test` extra)

Every source, its licence and the crop window are listed in SOURCES and in assets/LICENSES.
The crops are the repo's embedded real images: the demo trains and restores on them and the
tests use them. Degraded inputs and masks are generated from them, never stored.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

# name: (skimage.data loader, top, left, licence line)
SOURCES = {
    "astronaut_face": ("astronaut", 20, 140, "NASA, public domain (skimage.data.astronaut)"),
    "astronaut_suit": ("astronaut", 256, 0, "NASA, public domain (skimage.data.astronaut)"),
    "chelsea": ("chelsea", 30, 60, "CC0, Stefan van der Walt (skimage.data.chelsea)"),
    "coffee": ("coffee", 100, 180, "CC0, Rachel Michetti (skimage.data.coffee)"),
    "rocket": ("rocket", 100, 180, "SpaceX, public domain (skimage.data.rocket)"),
    "hubble": ("hubble_deep_field", 300, 300, "NASA, public domain (skimage.data.hubble_deep_field)"),
    "retina": ("retina", 600, 600, "CC0 1.0 (skimage.data.retina)"),
    "camera_grey": ("camera", 60, 150, "CC0, Lav Varshney (skimage.data.camera); greyscale on purpose"),
    "brick": ("brick", 0, 0, "CC0 Textures Bricks25 (skimage.data.brick); greyscale"),
    "grass": ("grass", 100, 100, "CC0 Textures (skimage.data.grass); greyscale"),
    "gravel": ("gravel", 200, 200, "CC0 Textures Gravel04 (skimage.data.gravel); greyscale"),
}
SIZE = 256
HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    import skimage.data

    out_dir = os.path.join(HERE, "images")
    os.makedirs(out_dir, exist_ok=True)
    lines = ["Embedded images (assets/images/), 256x256 crops made by assets/make_images.py", ""]
    for name, (loader, top, left, licence) in SOURCES.items():
        img = np.asarray(getattr(skimage.data, loader)())
        crop = img[top: top + SIZE, left: left + SIZE]
        if crop.shape[:2] != (SIZE, SIZE):
            raise ValueError(f"{loader}: crop at ({top}, {left}) leaves the {img.shape} image")
        path = os.path.join(out_dir, f"{name}.png")
        Image.fromarray(crop).save(path, optimize=True)
        lines.append(f"{name}.png\t{licence}; crop top={top} left={left}")
        print(f"wrote {path} {crop.shape}")
    with open(os.path.join(HERE, "LICENSES"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
