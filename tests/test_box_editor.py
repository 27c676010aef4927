"""The page's box editor in headless Chromium: mouse and finger, keys, suggestions, undo.

``deploy/static/boxes.js`` runs on a page of its own here, at desktop and phone sizes, with real
input: Playwright's mouse, and touches sent through Chromium's DevTools input domain (the
browser turns them into pointer events of type ``touch``, as a phone's screen does). Every box
is checked in the image's own pixels, the label JSON's ``[x, y, w, h]``.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "static" / "boxes.js"
IMAGE = (200, 100)  # the image's natural size in pixels
CLASSES = ["shirt", "shoe", "bag"]
PAGE = """<!doctype html><html><head><meta name="viewport" content="width=device-width">
</head><body style="margin:0;padding:10px"><div id="ed" style="width:{width}px"></div>
<script>{script}</script>
<script>
window.changes = [];
window.pointers = [];
window.editor = new BoxEditor(document.getElementById("ed"),
  {{classes: {classes}, onChange: boxes => window.changes.push(boxes)}});
editor.svg.addEventListener("pointerdown", e => window.pointers.push(e.pointerType));
document.addEventListener("keydown", e => {{ if (editor.handleKey(e)) e.preventDefault(); }});
</script></body></html>"""


def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", IMAGE, (90, 90, 90)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def chromium():
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing: scripts/test.sh installs Debian's chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Editor:
    """One editor on a page; screen points from image pixels, through the drawn SVG's box."""

    def __init__(self, tab, suggestions: list[dict] | None = None) -> None:
        self.tab = tab
        tab.evaluate("([url, s]) => editor.load(url, s)", [_png(), suggestions or []])
        box = tab.locator("#ed svg").bounding_box()
        self.left, self.top = box["x"], box["y"]
        self.scale = box["width"] / IMAGE[0]

    def at(self, x: float, y: float) -> tuple[float, float]:
        return self.left + x * self.scale, self.top + y * self.scale

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        mouse = self.tab.mouse
        mouse.move(*self.at(*start))
        mouse.down()
        mouse.move(*self.at(*end), steps=6)
        mouse.up()

    def touch_drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        cdp = self.tab.context.new_cdp_session(self.tab)
        (x0, y0), (x1, y1) = self.at(*start), self.at(*end)
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [
            {"x": x0, "y": y0}]})  # fmt: skip
        for k in range(1, 7):
            x, y = x0 + (x1 - x0) * k / 6, y0 + (y1 - y0) * k / 6
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [
                {"x": x, "y": y}]})  # fmt: skip
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    def value(self) -> list[dict]:
        return self.tab.evaluate("editor.value()")


def _open(chromium, width: int, viewport: dict, touch: bool = False):
    context = chromium.new_context(viewport=viewport, has_touch=touch, is_mobile=touch)
    tab = context.new_page()
    tab.set_content(
        PAGE.format(width=width, script=SCRIPT.read_text(), classes=json.dumps(CLASSES))
    )
    return context, tab


@pytest.fixture()
def desktop(chromium):
    context, tab = _open(chromium, 600, {"width": 900, "height": 700})
    yield tab
    context.close()


@pytest.fixture()
def phone(chromium):
    context, tab = _open(chromium, 340, {"width": 375, "height": 740}, touch=True)
    yield tab
    context.close()


def _close(box: dict, bbox: list[float], label: int, tol: float = 0.6) -> bool:
    return box["label"] == label and all(
        abs(a - b) <= tol for a, b in zip(box["bbox"], bbox, strict=True)
    )


def test_a_mouse_drag_draws_a_box_in_the_images_own_pixels_of_the_class_picked_by_key(desktop):
    editor = Editor(desktop)
    desktop.keyboard.press("2")
    editor.drag((20, 10), (120, 60))
    (box,) = editor.value()
    assert _close(box, [20, 10, 100, 50], label=2), box
    assert desktop.evaluate("window.pointers") == ["mouse"]


def test_a_finger_draws_a_box_at_phone_size_without_scrolling_the_page(phone):
    editor = Editor(phone)
    assert editor.scale < 2  # the image is drawn smaller than on the desktop
    editor.touch_drag((150, 80), (30, 20))  # from bottom right to top left
    (box,) = editor.value()
    assert _close(box, [30, 20, 120, 60], label=0, tol=1.0), box
    assert phone.evaluate("window.pointers") == ["touch"]
    assert phone.evaluate("window.scrollY") == 0


def test_a_tap_draws_nothing_and_a_box_past_the_edge_stays_inside_the_image(desktop):
    editor = Editor(desktop)
    editor.drag((50, 50), (51, 51))  # a screen pixel or two: a tap
    assert editor.value() == []
    editor.drag((150, 40), (260, 140))  # beyond the right and bottom edges
    (box,) = editor.value()
    assert _close(box, [150, 40, 50, 60], label=0), box


def test_a_selected_box_is_relabeled_by_key_deleted_and_brought_back_by_undo(desktop):
    editor = Editor(desktop)
    editor.drag((20, 20), (80, 70))  # drawn, so selected
    desktop.keyboard.press("1")
    assert editor.value()[0]["label"] == 1
    desktop.keyboard.press("Delete")
    assert editor.value() == []
    desktop.keyboard.press("Control+z")
    assert [b["label"] for b in editor.value()] == [1]
    desktop.keyboard.press("z")
    assert [b["label"] for b in editor.value()] == [0]  # before the relabel


def test_a_box_is_moved_by_dragging_it_and_resized_by_a_corner(desktop):
    editor = Editor(desktop)
    editor.drag((20, 20), (80, 60))
    editor.drag((50, 40), (90, 50))  # inside the box: moves it by (40, 10)
    assert _close(editor.value()[0], [60, 30, 60, 40], label=0), editor.value()
    editor.drag((120, 70), (150, 90))  # its bottom-right corner handle
    assert _close(editor.value()[0], [60, 30, 90, 60], label=0), editor.value()
    assert len(desktop.evaluate("window.changes")) == 3  # draw, move, resize: one change each


def test_the_models_boxes_are_suggestions_until_accepted_by_a_click_or_all_at_once(desktop):
    suggestions = [
        {"bbox": [10, 10, 40, 30], "label": "bag", "score": 0.91},
        {"bbox": [100, 20, 50, 50], "label": 1, "score": 0.42},
        {"bbox": [160, 60, 30, 30], "label": 0, "score": 0.30},
    ]
    editor = Editor(desktop, suggestions)
    assert editor.value() == []  # shown, not yet labels
    assert desktop.locator("g.suggestion").count() == 3
    assert "bag? 0.91" in desktop.text_content("#ed svg")
    desktop.mouse.click(*editor.at(125, 45))  # the second suggestion
    assert editor.value() == [{"bbox": [100, 20, 50, 50], "label": 1}]
    desktop.keyboard.press("Escape")
    desktop.keyboard.press("a")  # the rest
    assert sorted(b["label"] for b in editor.value()) == [0, 1, 2]
    assert desktop.locator("g.suggestion").count() == 0


def test_a_fixed_suggestion_keeps_the_fix_and_an_image_with_nothing_is_an_empty_label(desktop):
    editor = Editor(desktop, [{"bbox": [10, 10, 40, 30], "label": 2, "score": 0.8}])
    desktop.mouse.click(*editor.at(30, 25))  # accepted and selected
    desktop.keyboard.press("0")  # the model's class was wrong
    assert editor.value() == [{"bbox": [10, 10, 40, 30], "label": 0}]
    Editor(desktop)  # the next image, nothing in it
    assert editor.value() == []
