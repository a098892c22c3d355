from __future__ import annotations

import io
import xml.etree.ElementTree as ET

from PIL import Image

from bastion.web.auth._glyphs import GLYPHS
from bastion.web.auth.captcha import ALPHABET, LENGTH, new_answer, render_png, render_svg

SVG = "{http://www.w3.org/2000/svg}"
ALLOWED_ELEMENTS = {f"{SVG}{name}" for name in ("svg", "path", "circle", "rect")}
ALLOWED_ATTRIBUTES = {
    "d",
    "fill",
    "stroke",
    "stroke-width",
    "stroke-linecap",
    "stroke-linejoin",
    "cx",
    "cy",
    "r",
    "x",
    "y",
    "width",
    "height",
    "viewBox",
    "role",
    "aria-label",
}


def test_answers_use_the_unambiguous_alphabet() -> None:
    for _ in range(200):
        answer = new_answer()
        assert len(answer) == LENGTH
        assert set(answer) <= set(ALPHABET)
    assert not set("01OIL") & set(ALPHABET)


def test_every_character_has_a_glyph() -> None:
    assert set(GLYPHS) == set(ALPHABET)


def test_png_is_a_real_picture_that_differs_each_time() -> None:
    first, second = render_png("ABC23"), render_png("ABC23")
    image = Image.open(io.BytesIO(first))
    assert image.format == "PNG"
    assert image.size == (200, 70)
    assert first != second


def test_svg_draws_outlines_only_and_never_the_answer_as_text() -> None:
    answer = "KMX7Q"
    source = render_svg(answer)
    root = ET.fromstring(source)  # noqa: S314 - our own output
    assert root.tag == f"{SVG}svg"
    for element in root.iter():
        assert element.tag in ALLOWED_ELEMENTS, element.tag
        assert set(element.attrib) <= ALLOWED_ATTRIBUTES, element.attrib
    assert "<text" not in source
    assert "style" not in source
    assert "transform" not in source
    assert answer not in source
    glyph_paths = [e for e in root.iter(f"{SVG}path") if e.get("stroke-linecap") == "round"]
    assert len(glyph_paths) == LENGTH
    assert render_svg(answer) != source
