"""Render a thumbnail .jpg for every example workflow, from Latent Lab's own Python code on synthetic latents.

    python3 tools/make_thumbnails.py

Each workflow example_workflows/<name>.json gets <name>.jpg beside it (ComfyUI's template browser shows it):
its name (the browser's title) over a picture in the spirit of the workflow, made with core.preview, core.correct_ops and core.render
on a synthetic SDXL-like latent. No model weights are involved; the pictures show what the nodes draw, not
what a real model makes.
"""
import os
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _pack import ROOT, load_pack  # noqa: E402

FOLDER = os.path.join(ROOT, "example_workflows")
SIZE = (512, 384)
TITLE_BAND = 44


def synthetic(seed: int, channels: int = 4, height: int = 36, width: int = 48):
    import torch
    generator = torch.Generator().manual_seed(seed)
    ys = torch.linspace(-1, 1, height)[:, None]
    xs = torch.linspace(-1, 1, width)[None, :]
    planes = []
    for c in range(channels):
        phase = torch.rand(4, generator=generator) * 6.28
        plane = (torch.sin(xs * (2.0 + c) + phase[0]) * torch.cos(ys * (1.5 + c % 2) + phase[1])
                 + 0.8 * torch.exp(-((xs - 0.3 * torch.cos(phase[2])) ** 2 + (ys - 0.3 * torch.sin(phase[3])) ** 2) * 3)
                 + 0.15 * torch.randn(height, width, generator=generator))
        planes.append(plane)
    scaled = torch.stack(planes)[None]
    scaled = scaled / scaled.abs().amax() * 3.6
    scaled[:, 1] += 0.9  # a color cast for corrections to remove
    return scaled


def preview_tile(scaled, fmt, size):
    from latent_lab.core import correct_ops as correct, preview, render
    affine = correct.scaled_affine(fmt.rgb_affine("comfyui"), fmt)
    rgb = preview.linear_rgb(scaled, affine)[0].permute(1, 2, 0)
    return render.to_pil(rgb).resize(size, resample=0)


def map_tiles(scaled, size):
    from latent_lab.core import render
    bound = scaled.abs().amax()
    return [render.to_pil(render.diverging(scaled[0, c] / bound)).resize(size, resample=0)
            for c in range(scaled.shape[1])]


def picture(name: str, seed: int):
    """The body of the thumbnail, chosen by what the workflow's name says it is about."""
    name = name.lower()
    from PIL import Image
    from latent_lab.core import correct_ops as correct, formats, render
    fmt = formats.FORMATS["sdxl"]
    scaled = synthetic(seed)
    width, height = SIZE[0], SIZE[1] - TITLE_BAND
    canvas = Image.new("RGB", (width, height), render.BACKGROUND)
    half = (width - 12) // 2
    if "correct" in name or "balance" in name or "clamp" in name:
        fixed = correct.center(scaled, [1.0] * 4, 1.0)
        fixed = correct.soft_clamp(fixed, 3.0, 3.5)
        fixed = correct.maximize(fixed, 4.0, [0, 1, 2])
        for i, latent in enumerate((scaled, fixed)):
            canvas.paste(preview_tile(latent, fmt, (half, height - 8)), (4 + i * (half + 4), 4))
    elif "sweep" in name or "cfg" in name:
        cells = [scaled * (0.45 + 0.22 * i) for i in range(6)]
        tile = ((width - 16) // 3, (height - 12) // 2)
        for i, latent in enumerate(cells):
            row, col = divmod(i, 3)
            canvas.paste(preview_tile(latent, fmt, tile), (4 + col * (tile[0] + 4), 4 + row * (tile[1] + 4)))
    elif "video" in name:
        frames = [torch_roll(scaled, 3 * i) for i in range(8)]
        tile = ((width - 20) // 4, (height - 12) // 2)
        for i, latent in enumerate(frames):
            row, col = divmod(i, 4)
            canvas.paste(preview_tile(latent, fmt, tile), (4 + col * (tile[0] + 4), 4 + row * (tile[1] + 4)))
    elif "bridge" in name:
        other = formats.FORMATS["sd15"]
        canvas.paste(preview_tile(scaled, other, (half, height - 8)), (4, 4))
        canvas.paste(preview_tile(scaled, fmt, (half, height - 8)), (8 + half, 4))
    else:
        canvas.paste(preview_tile(scaled, fmt, (half, height - 8)), (4, 4))
        tile = ((half - 4) // 2, (height - 12) // 2)
        maps = map_tiles(scaled, tile)
        if "probe" in name:
            maps = map_tiles(scaled * torch_mask(scaled), tile)
        for i, image in enumerate(maps[:4]):
            row, col = divmod(i, 2)
            canvas.paste(image, (8 + half + col * (tile[0] + 4), 4 + row * (tile[1] + 4)))
    return canvas


def torch_roll(scaled, cells: int):
    """The latent moved sideways by `cells`: frames of a pan."""
    import torch
    return torch.roll(scaled, cells, dims=-1)


def torch_mask(scaled):
    import torch
    mask = torch.ones_like(scaled) * 0.35
    mask[..., scaled.shape[-2] // 3, scaled.shape[-1] // 2] = 9.0  # one anomalous cell stands out
    return mask


def thumbnail(name: str, title: str):
    from PIL import Image, ImageDraw
    from latent_lab.core import render
    image = Image.new("RGB", SIZE, render.BACKGROUND)
    image.paste(picture(name, zlib.crc32(name.encode()) % 10_000), (0, TITLE_BAND))
    draw = ImageDraw.Draw(image)
    brand = render.font(13)
    room = SIZE[0] - 36 - draw.textlength("Latent Lab", font=brand)
    size = next(s for s in range(22, 9, -1) if draw.textlength(title, font=render.font(s)) <= room)
    draw.text((12, TITLE_BAND // 2), title, font=render.font(size), fill=render.TEXT, anchor="lm")
    draw.text((SIZE[0] - 12, TITLE_BAND // 2), "Latent Lab", font=brand, fill=(150, 150, 160), anchor="rm")
    return image


def workflow_names() -> list:
    return sorted(os.path.splitext(n)[0] for n in os.listdir(FOLDER) if n.endswith(".json"))


def main() -> None:
    load_pack()
    for name in workflow_names():
        path = os.path.join(FOLDER, name + ".jpg")
        thumbnail(name, name).save(path, quality=88, optimize=True)
        print(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
