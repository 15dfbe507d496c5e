"""The VGA text screen: 80×25 cells of (character, attribute) at VGA_TEXT."""

from __future__ import annotations

from collections.abc import Callable

from emulator.layout import VGA_TEXT

COLUMNS, ROWS = 80, 25


def screen_text(read_phys: Callable[[int, int], bytes]) -> str:
    """The screen as 25 lines of text (code page 437 glyphs, trailing blanks trimmed)."""
    cells = read_phys(VGA_TEXT, COLUMNS * ROWS * 2)
    lines = []
    for row in range(ROWS):
        chars = cells[row * COLUMNS * 2 : (row + 1) * COLUMNS * 2 : 2]
        lines.append(chars.decode("cp437").replace("\0", " ").rstrip())
    return "\n".join(lines)
