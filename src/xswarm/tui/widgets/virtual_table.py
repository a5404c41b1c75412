"""A table that draws only the rows on screen, however many rows it holds.

Textual's ``DataTable`` keeps every row as renderables and re-renders every visible cell through
Rich whenever any cell changes; with a live fleet that is most of the dashboard's CPU. Here the
table holds only the order of the row keys; a row's cells are asked of ``build_row`` when the
row scrolls into view, kept while it stays there, and drawn as one strip of plain segments. An
update redraws only the rows whose cells changed, so the cost of a repaint follows the height
of the terminal, not the size of the fleet.

The cursor belongs to a key, not a position: when the order changes under it, the cursor
follows its row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

CELL_PADDING = 1


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int
    numeric: bool = False


def signature(cell: Text) -> tuple[str, str, str | None]:
    """What makes two cells look the same (rich's Text equality ignores the base style)."""
    return cell.plain, str(cell.style), cell.justify


def fit(text: str, width: int, right: bool) -> str:
    """``text`` cut or padded to exactly ``width`` cells, plus the padding either side."""
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…" if width > 1 else text[:width]
    text = text.rjust(width) if right else text.ljust(width)
    pad = " " * CELL_PADDING
    return pad + text + pad


class VirtualTable(ScrollView, can_focus=True):
    """Rows by key in a given order; cells are ``rich.text.Text`` (never markup)."""

    # False: the cursor still follows a row, but is not drawn (a table only to read).
    show_cursor = True
    # Which rows are striped: 1 puts the stripe on the first row (as DataTable does).
    stripe_offset = 0
    # The header's background across the whole width, not only over the columns.
    header_fills_width = False

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "virtual-table--header",
        "virtual-table--cursor",
        "virtual-table--even-row",
    }
    DEFAULT_CSS = """
    VirtualTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        & > .virtual-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        & > .virtual-table--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .virtual-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        &:focus > .virtual-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("up", "cursor_up", "Cursor up", show=False),
        Binding("down", "cursor_down", "Cursor down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home,ctrl+home", "first_row", "First row", show=False),
        Binding("end,ctrl+end", "last_row", "Last row", show=False),
    ]

    class RowSelected(Message):
        """The operator chose a row (enter or a click on it)."""

        def __init__(self, table: VirtualTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> VirtualTable:
            return self.table

    class HeaderSelected(Message):
        """The operator clicked a column's header."""

        def __init__(self, table: VirtualTable, column: str) -> None:
            super().__init__()
            self.table = table
            self.column = column

        @property
        def control(self) -> VirtualTable:
            return self.table

    def __init__(
        self, build_row: Callable[[str], Sequence[Text]], *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.build_row = build_row
        self.columns: dict[str, ColumnSpec] = {}
        self.order: list[str] = []
        # Where each key is in ``order``: built when first asked after the order changed
        # (a fleet's order changes at every repaint; the positions are rarely needed).
        self._positions: dict[str, int] | None = {}
        self._cells: dict[str, list[Text]] = {}
        self._signatures: dict[str, tuple[tuple[str, str, str | None], ...]] = {}
        self._strips: dict[str, Strip] = {}
        self._cursor_key: str | None = None
        self._drawn_with: tuple[Style, Style] | None = None
        self.rows_built = 0

    # -- what the owner calls -------------------------------------------------------------

    @property
    def ordered_columns(self) -> list[ColumnSpec]:
        return list(self.columns.values())

    @property
    def row_count(self) -> int:
        return len(self.order)

    @property
    def cursor_row(self) -> int:
        key = self._cursor_key
        return self._position(key) or 0

    @property
    def body_height(self) -> int:
        """Rows that fit under the header."""
        return max(1, self.scrollable_content_region.height - 1)

    def _position(self, key: str | None) -> int | None:
        if key is None:
            return None
        if self._positions is None:
            self._positions = {k: n for n, k in enumerate(self.order)}
        return self._positions.get(key)

    def visible_keys(self) -> list[str]:
        top = round(self.scroll_y)
        return self.order[top : top + self.body_height]

    def set_columns(
        self, specs: Sequence[ColumnSpec], labels: Mapping[str, str] | None = None
    ) -> None:
        """Replace the columns (and so every cached row) when the layout or labels change."""
        labels = labels or {}
        columns = {
            s.key: ColumnSpec(s.key, labels.get(s.key, s.label), s.width, s.numeric) for s in specs
        }
        if columns == self.columns:
            return
        self.columns = columns
        self.forget_rows()
        self._resize()

    def forget_rows(self) -> None:
        """Drop every built row; they are built again as they are drawn."""
        self._cells.clear()
        self._signatures.clear()
        self._strips.clear()
        self.refresh()

    def set_order(self, order: Sequence[str], keep: str | None = None) -> None:
        """The keys of every row, in display order; the cursor stays on ``keep`` (or its row)."""
        keep = keep or self._cursor_key
        was_at = self.cursor_row
        new_order = list(order)
        if new_order != self.order:
            shown = self.visible_keys()
            self.order = new_order
            self._positions = None
            self._resize()
            # Calls come and go off screen at every repaint: the lines on screen are drawn
            # again only when what they show moved.
            if self.visible_keys() != shown:
                self._strips.clear()
                self.refresh()
            still = set(self.visible_keys())
            for key in [k for k in self._cells if k not in still]:
                self._drop(key)
        if keep is not None and self._position(keep) is not None:
            self._cursor_key = keep
        elif self.order:
            # The cursor's row is gone: the cursor stays where it was on screen.
            self._cursor_key = self.order[min(was_at, len(self.order) - 1)]
        else:
            self._cursor_key = None
        self._scroll_to_cursor()

    def update_rows(self, keys: Sequence[str]) -> None:
        """Rebuild the named rows that are on screen; rows off screen are just forgotten."""
        visible = set(self.visible_keys())
        for key in keys:
            if key in visible:
                self._rebuild(key)
            elif key in self._cells:
                self._drop(key)
        for key in [k for k in self._cells if k not in visible]:
            self._drop(key)

    def update_cell(self, row_key: str, column_key: str, value: Text) -> None:
        """Replace one cell of a built row; its line is redrawn."""
        cells = self._cells.get(row_key)
        if cells is None:
            return
        cells[list(self.columns).index(column_key)] = value
        self._strips.pop(row_key, None)
        index = self._position(row_key)
        if index is not None:
            self.refresh_lines(index + 1)

    def get_cell(self, row_key: str, column_key: str) -> Text:
        return self._row(row_key)[list(self.columns).index(column_key)]

    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None in an empty table."""
        return self._cursor_key if self.order else None

    def move_cursor(self, row: int) -> None:
        if self.order:
            self._cursor_key = self.order[max(0, min(row, len(self.order) - 1))]
            self._scroll_to_cursor()
            self.refresh()

    # -- building rows --------------------------------------------------------------------

    def _row(self, key: str) -> list[Text]:
        cells = self._cells.get(key)
        if cells is None:
            cells = list(self.build_row(key))
            self.rows_built += 1
            self._cells[key] = cells
            self._signatures[key] = tuple(signature(cell) for cell in cells)
        return cells

    def _rebuild(self, key: str) -> None:
        if key not in self._cells:
            self._row(key)
            index = self._position(key)
            if index is not None:
                self.refresh_lines(index + 1)
            return
        cells = list(self.build_row(key))
        self.rows_built += 1
        new = tuple(signature(cell) for cell in cells)
        for column, cell, before, after in zip(
            list(self.columns), cells, self._signatures[key], new, strict=True
        ):
            if before != after:
                self.update_cell(key, column, cell)
        self._signatures[key] = new

    def _drop(self, key: str) -> None:
        self._cells.pop(key, None)
        self._signatures.pop(key, None)
        self._strips.pop(key, None)

    # -- drawing --------------------------------------------------------------------------

    def _resize(self) -> None:
        """Set the virtual size; a new row count alone does not lay the screen out again.

        ``virtual_size`` asks for a layout on every change, which renders the whole screen;
        with calls coming and going every repaint that was most of the cost. Only when the
        scrollbar appears or goes, or the columns change, is a layout needed.
        """
        width = sum(spec.width + 2 * CELL_PADDING for spec in self.columns.values())
        new = Size(width, len(self.order) + 1)
        old = self.virtual_size
        if new == old:
            return
        view = self.scrollable_content_region.height
        if old.width != new.width or (old.height > view) != (new.height > view):
            self.virtual_size = new
            # The scroll range is known after the layout; the cursor's row is put in view then.
            self.call_after_refresh(self._scroll_to_cursor)
            return
        self.set_reactive(VirtualTable.virtual_size, new)
        self.vertical_scrollbar.window_virtual_size = new.height
        self.vertical_scrollbar.refresh()
        self.scroll_y = self.validate_scroll_y(self.scroll_y)

    def _segments(self, cells: Sequence[Text | str], base: Style) -> list[Segment]:
        segments = []
        for spec, cell in zip(self.columns.values(), cells, strict=True):
            if isinstance(cell, Text):
                text, style = cell.plain, cell.style
                right = cell.justify == "right" or (cell.justify is None and spec.numeric)
            else:
                text, style, right = cell, "", spec.numeric
            cell_style = base + Style.parse(style) if isinstance(style, str) else base + style
            segments.append(Segment(fit(text, spec.width, right), cell_style))
        return segments

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        scroll_x = round(self.scroll_x)
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("virtual-table--header")
            labels = [spec.label for spec in self.columns.values()]
            strip = Strip(self._segments(labels, style))
            if self.header_fills_width:
                return strip.crop_extend(scroll_x, scroll_x + width, style)
        else:
            index = round(self.scroll_y) + y - 1
            # Lines under a horizontal scrollbar are asked for too, never seen.
            if index >= len(self.order) or y > self.body_height:
                return Strip.blank(width, base)
            key = self.order[index]
            strip = self._strips.get(key) or self._draw_row(key, index, base)
            if key == self._cursor_key and self.show_cursor:
                # On top of the cells' own colours, as DataTable draws its cursor.
                cursor = self.get_component_rich_style("virtual-table--cursor")
                strip = Strip(Segment.apply_style(strip, post_style=cursor), strip.cell_length)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def _draw_row(self, key: str, index: int, base: Style) -> Strip:
        style = base
        if (index + self.stripe_offset) % 2:
            style = base + self.get_component_rich_style("virtual-table--even-row")
        strip = Strip(self._segments(self._row(key), style))
        self._strips[key] = strip
        return strip

    def notify_style_update(self) -> None:
        """Drawn rows are kept unless the styles they were drawn with changed: the focus
        moving to the filter box restyles only the cursor, which is put on when drawn."""
        super().notify_style_update()
        # Before the component styles are known (at mount) a null style: drawn afresh later.
        stripe = self.get_component_rich_style("virtual-table--even-row", default=Style.null())
        drawn_with = (self.rich_style, stripe)
        if drawn_with != self._drawn_with:
            self._strips.clear()
            self._drawn_with = drawn_with

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # Strips carry zebra stripes by position; a scroll moves every row. Rows that left
        # the screen are forgotten, so memory too follows the screen, not the fleet.
        self._strips.clear()
        visible = set(self.visible_keys())
        for key in [k for k in self._cells if k not in visible]:
            self._drop(key)

    # -- the operator ---------------------------------------------------------------------

    def _scroll_to_cursor(self) -> None:
        index = self.cursor_row
        top = round(self.scroll_y)
        if index < top:
            self.scroll_to(y=index, animate=False, immediate=True)
        elif index >= top + self.body_height:
            self.scroll_to(y=index - self.body_height + 1, animate=False, immediate=True)

    def _move(self, rows: int) -> None:
        if self.order:
            self.move_cursor(self.cursor_row + rows)

    def action_cursor_up(self) -> None:
        self._move(-1)

    def action_cursor_down(self) -> None:
        self._move(1)

    def action_page_up(self) -> None:
        self._move(-self.body_height)

    def action_page_down(self) -> None:
        self._move(self.body_height)

    def action_first_row(self) -> None:
        self.move_cursor(0)

    def action_last_row(self) -> None:
        self.move_cursor(len(self.order) - 1)

    def action_select_cursor(self) -> None:
        key = self.selected_key()
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = offset.x + round(self.scroll_x)
            for spec in self.columns.values():
                x -= spec.width + 2 * CELL_PADDING
                if x < 0:
                    self.post_message(self.HeaderSelected(self, spec.key))
                    return
            return
        index = round(self.scroll_y) + offset.y - 1
        if 0 <= index < len(self.order):
            self.move_cursor(index)
            self.action_select_cursor()
