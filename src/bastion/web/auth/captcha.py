"""Captcha pictures: a distorted PNG (Pillow) and an SVG fallback drawn as path outlines.

Neither contains the answer as text: the SVG has no <text> element, only jittered,
individually transformed strokes among noise curves.
"""

from __future__ import annotations

import io
import math
import secrets

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from bastion.web.auth._glyphs import GLYPHS

ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 5
WIDTH, HEIGHT = 200, 70

_random = secrets.SystemRandom()


def new_answer() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def render_png(answer: str) -> bytes:
    image = Image.new("RGB", (WIDTH, HEIGHT), (255, 255, 255))
    font = ImageFont.load_default(size=_random.randint(34, 40))
    step = (WIDTH - 20) / len(answer)
    for i, char in enumerate(answer):
        tile = Image.new("RGBA", (56, 62), (0, 0, 0, 0))
        color = (_random.randint(0, 90), _random.randint(0, 90), _random.randint(40, 130), 255)
        ImageDraw.Draw(tile).text((10, 4), char, font=font, fill=color)
        tile = tile.rotate(
            _random.uniform(-30, 30), resample=Image.Resampling.BICUBIC, expand=False
        )
        x = int(8 + i * step + _random.uniform(-4, 4))
        image.paste(tile, (x, _random.randint(-2, 10)), tile)
    image = _wave(image)
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        points = [(_random.uniform(0, WIDTH), _random.uniform(0, HEIGHT)) for _ in range(3)]
        draw.line(points, fill=_noise_color(), width=_random.randint(1, 2))
    for _ in range(300):
        draw.point((_random.randrange(WIDTH), _random.randrange(HEIGHT)), fill=_noise_color())
    buffer = io.BytesIO()
    image.filter(ImageFilter.SMOOTH).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _wave(image: Image.Image) -> Image.Image:
    amplitude, period, phase = (
        _random.uniform(2, 5),
        _random.uniform(25, 50),
        _random.uniform(0, 6.3),
    )
    out = Image.new("RGB", image.size, (255, 255, 255))
    for x in range(0, WIDTH, 2):  # 2-pixel strips: smooth enough, ten times fewer pastes
        shift = int(amplitude * math.sin(2 * math.pi * x / period + phase))
        out.paste(image.crop((x, 0, x + 2, HEIGHT)), (x, shift))
    return out


def _noise_color() -> tuple[int, int, int]:
    return (_random.randint(60, 200), _random.randint(60, 200), _random.randint(60, 200))


def _svg_color() -> str:
    red, green, blue = _noise_color()
    return f"#{red:02x}{green:02x}{blue:02x}"


def render_svg(answer: str) -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="captcha">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
    ]
    for _ in range(6):
        parts.append(_noise_curve())
    step = (WIDTH - 24) / len(answer)
    for i, char in enumerate(answer):
        parts.append(_glyph_path(char, 14 + i * step + _random.uniform(-3, 3)))
    for _ in range(60):
        x, y, r = _random.uniform(0, WIDTH), _random.uniform(0, HEIGHT), _random.uniform(0.5, 1.6)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{_svg_color()}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _glyph_path(char: str, left: float) -> str:
    angle = math.radians(_random.uniform(-25, 25))
    scale = _random.uniform(6.5, 8.0)
    top = _random.uniform(8, 18)
    cos, sin = math.cos(angle), math.sin(angle)
    segments = []
    for line in GLYPHS[char]:
        points = []
        for gx, gy in line:
            # Centre, rotate, scale, move, then jitter each point on its own.
            cx, cy = (gx - 2) * scale, (gy - 3) * scale
            x = left + 14 + cx * cos - cy * sin + _random.uniform(-1.2, 1.2)
            y = top + 22 + cx * sin + cy * cos + _random.uniform(-1.2, 1.2)
            points.append(f"{x:.1f} {y:.1f}")
        segments.append("M" + " L".join(points))
    red, green, blue = _random.randint(0, 80), _random.randint(0, 80), _random.randint(40, 120)
    color = f"#{red:02x}{green:02x}{blue:02x}"
    width = _random.uniform(2.2, 3.2)
    return (
        f'<path d="{" ".join(segments)}" fill="none" stroke="{color}" stroke-width="{width:.1f}" '
        'stroke-linecap="round" stroke-linejoin="round"/>'
    )


def _noise_curve() -> str:
    def point() -> str:
        return f"{_random.uniform(0, WIDTH):.1f} {_random.uniform(0, HEIGHT):.1f}"

    return (
        f'<path d="M{point()} C{point()} {point()} {point()}" fill="none" '
        f'stroke="{_svg_color()}" stroke-width="{_random.uniform(1, 2.2):.1f}"/>'
    )
