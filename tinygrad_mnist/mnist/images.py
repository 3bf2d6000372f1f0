"""Turning a user's image into an MNIST-style input: 28x28, light ink on black, the digit
scaled into a 20x20 box and centred by its centre of mass, as MNIST itself was made."""
import numpy as np


def load_digit(path):
    """Any grayscale or RGB(A) image file -> (28, 28) float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"cannot read {path} as an image ({error})") from None
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255
    return to_mnist_layout(pixels, str(path))


MIN_CONTRAST = 0.06         # ink at least this much brighter than clean paper (15 of 255),
NOISE_MARGIN = 8            # and than 8 standard deviations of the paper's own noise


def to_mnist_layout(pixels, name="image"):
    from PIL import Image
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 0.5:
        pixels = 1 - pixels              # dark ink on light paper -> MNIST's light on dark
        border = 1 - border
    # ink stands out from the paper by a clear margin: a blank page of any shade (white,
    # grey, black) has none, whatever its noise
    # (a pale pencil digit, grey 180 on 230, is ink; a scanned blank page's speckle is not)
    paper = float(np.median(border))
    noise = 1.4826 * float(np.median(np.abs(border - paper)))      # the paper's spread
    contrast = float(pixels.max()) - paper
    if contrast < max(MIN_CONTRAST, NOISE_MARGIN * noise):
        raise ValueError(f"{name} looks blank: no ink stands out from the background "
                         f"(its brightest pixel is {contrast:.0%} above the paper)")
    pixels = np.clip((pixels - paper) / contrast, 0, 1)     # the paper black, the ink up to 1
    ink = pixels > 0.25
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = 20 / max(crop.shape)
    height, width = (max(1, round(n * scale)) for n in crop.shape)
    resized = Image.fromarray((crop * 255).astype(np.uint8)).resize((width, height),
                                                                    Image.LANCZOS)
    digit = np.asarray(resized, dtype=np.float32) / 255
    canvas = np.zeros((28, 28), dtype=np.float32)
    top, left = (28 - height) // 2, (28 - width) // 2
    canvas[top:top + height, left:left + width] = digit
    # shift so the centre of mass lands on the centre of the 28x28 field
    total = canvas.sum()
    ys, xs = np.mgrid[0:28, 0:28]
    dy = int(round(13.5 - (ys * canvas).sum() / total))
    dx = int(round(13.5 - (xs * canvas).sum() / total))
    dy = int(np.clip(dy, -top, 28 - top - height))
    dx = int(np.clip(dx, -left, 28 - left - width))
    return np.roll(canvas, (dy, dx), axis=(0, 1))
