"""A flame graph of folded stacks, drawn as SVG by this module.

Each stack is a column of frames, root at the bottom; frames that share a
prefix of the stack merge into one box whose width is their total count.
Siblings are sorted by name, so the x axis is not time: only widths mean
anything. Kernel frames (suffix "_[k]") are drawn in blue, user frames in
warm colours.

    graph = FlameGraph(folded, title="on-CPU")
    graph                    # in a notebook: displayed inline (_repr_svg_)
    graph.save("cpu.svg")
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from html import escape
from typing import Mapping

from .symbols import KERNEL_SUFFIX

ROW, FONT, CHAR = 17, 11, 6.6         # px per frame row, font size, px per character


@dataclass
class Node:
    name: str
    value: int = 0
    children: dict[str, "Node"] = field(default_factory=dict)


@dataclass
class Box:
    name: str
    x: float        # share of the total from the left, 0..1
    width: float    # share of the total
    depth: int      # 0 = the root row
    value: int


def tree(folded: Mapping[str, int]) -> Node:
    """Merge stacks by common prefix; each node's value is the sum below it."""
    root = Node("all")
    for stack, n in folded.items():
        if n <= 0:
            continue
        node = root
        node.value += n
        for frame in stack.split(";"):
            node = node.children.setdefault(frame, Node(frame))
            node.value += n
    return root


def layout(folded: Mapping[str, int]) -> list[Box]:
    """The boxes of a flame graph: the root "all" box, then every frame."""
    root = tree(folded)
    if not root.value:
        return []
    boxes: list[Box] = []

    def place(node: Node, x: float, depth: int) -> None:
        boxes.append(Box(node.name, x, node.value / root.value, depth, node.value))
        for name in sorted(node.children):
            child = node.children[name]
            place(child, x, depth + 1)
            x += child.value / root.value

    place(root, 0.0, 0)
    return boxes


def colour(name: str) -> str:
    """A stable colour per name: warm for user code, blue for the kernel."""
    h = hashlib.md5(name.encode()).digest()
    if name.endswith(KERNEL_SUFFIX):
        return f"rgb({40 + h[0] % 60},{110 + h[1] % 70},{190 + h[2] % 60})"
    return f"rgb({205 + h[0] % 50},{80 + h[1] % 130},{h[2] % 55})"


def render(folded: Mapping[str, int], title: str = "", unit: str = "samples",
           width: int = 1000, min_width_px: float = 0.5) -> str:
    """The SVG text of the flame graph; each box has a tooltip (<title>) with
    its name, value and share. Boxes narrower than min_width_px are left out."""
    boxes = layout(folded)
    depth = max((b.depth for b in boxes), default=0) + 1
    top = 28 if title else 6
    height = top + depth * ROW + 6
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Verdana, sans-serif" '
           f'font-size="{FONT}">',
           f'<rect width="100%" height="100%" fill="#f8f8f0"/>']
    if title:
        out.append(f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">'
                   f'{escape(title)}</text>')
    if not boxes:
        out.append(f'<text x="10" y="{top + 12}">no {escape(unit)}</text>')
    total = boxes[0].value if boxes else 0
    for b in boxes:
        w = b.width * (width - 10)
        if w < min_width_px:
            continue
        x = 5 + b.x * (width - 10)
        y = top + (depth - 1 - b.depth) * ROW
        fill = "#dddddd" if b.depth == 0 else colour(b.name)
        tip = f"{b.name} ({b.value} {unit}, {100 * b.value / total:.1f}%)"
        chars = int((w - 6) / CHAR)
        text = b.name if len(b.name) <= chars else (b.name[:chars - 2] + ".." if chars > 3 else "")
        out.append(f'<g><title>{escape(tip)}</title>'
                   f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{ROW - 1}" rx="2" '
                   f'fill="{fill}"/>'
                   + (f'<text x="{x + 3:.2f}" y="{y + ROW - 5}">{escape(text)}</text>' if text else "")
                   + '</g>')
    out.append("</svg>")
    return "\n".join(out)


class FlameGraph:
    """Folded stacks drawn as an SVG; shows itself inline in Jupyter."""

    def __init__(self, folded: Mapping[str, int], title: str = "", unit: str = "samples",
                 width: int = 1000):
        self.folded, self.title, self.unit, self.width = dict(folded), title, unit, width

    def svg(self) -> str:
        return render(self.folded, self.title, self.unit, self.width)

    def _repr_svg_(self) -> str:
        return self.svg()

    def save(self, path) -> None:
        with open(path, "w") as f:
            f.write(self.svg())
