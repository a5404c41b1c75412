"""A small table fed whole rows by key, that redraws only the rows whose content changed.

It was a ``DataTable``; the instances panel changes every second, and a ``DataTable`` renders
every cell of every row through Rich after any change (about half a millisecond a cell), at
fleet scale the dashboard's largest single cost. Here the caller's cells are kept as given and
``VirtualTable`` draws them as plain segments. The caller hands the wanted order with every
batch; the cursor follows its row (by key), so an action aimed at "this row" still means the
same row after the table moved under the operator's eyes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from rich.text import Text

from xswarm.tui.widgets.virtual_table import ColumnSpec, VirtualTable, signature

__all__ = ["ColumnSpec", "KeyedTable", "signature"]


class KeyedTable(VirtualTable):
    """Rows keyed by an id; cells are ``rich.text.Text`` (never markup) from the caller.

    Drawn as the ``DataTable`` it replaced was: stripes from the first row, a header across.
    """

    DEFAULT_CSS = """
    KeyedTable > .virtual-table--even-row {
        background: $surface-darken-1 40%;
    }
    """
    stripe_offset = 1
    header_fills_width = True

    def __init__(
        self, *, id: str | None = None, cursor_type: Literal["row", "none"] = "row"
    ) -> None:
        super().__init__(self._cells_of, id=id)
        self.show_cursor = cursor_type != "none"
        self._specs: tuple[ColumnSpec, ...] = ()
        self._rows: dict[str, list[Text]] = {}
        self._shown: dict[str, tuple[tuple[str, str, str | None], ...]] = {}

    def _cells_of(self, key: str) -> list[Text]:
        return self._rows.get(key) or [Text("") for _ in self.columns]

    def set_columns(
        self, specs: Sequence[ColumnSpec], labels: Mapping[str, str] | None = None
    ) -> None:
        """Replace the columns (and so every row) when the layout or the sort marker changes."""
        labels = labels or {}
        wanted = tuple(
            ColumnSpec(s.key, labels.get(s.key, s.label), s.width, s.numeric) for s in specs
        )
        if wanted == self._specs:
            return
        self._specs = wanted
        self._rows.clear()
        self._shown.clear()
        super().set_columns(wanted)
        self.set_order([])

    @property
    def column_keys(self) -> list[str]:
        return [spec.key for spec in self._specs]

    def get_row(self, key: str) -> list[Text]:
        return list(self._rows[key])

    def drop_all(self) -> None:
        self._rows.clear()
        self._shown.clear()
        self.set_order([])
        self.forget_rows()

    def apply_rows(
        self,
        upserts: Mapping[str, Sequence[Text]],
        removals: Iterable[str] = (),
        order: Sequence[str] | None = None,
        keep: str | None = None,
    ) -> None:
        """Add, update and remove rows, then put them in ``order`` (default: as they came).

        The cursor ends on the row ``keep`` names (default: the row it is on now). Only rows
        whose cells look different are drawn again.
        """
        changed = []
        for key in removals:
            self._rows.pop(key, None)
            self._shown.pop(key, None)
        for key, cells in upserts.items():
            new = tuple(signature(cell) for cell in cells)
            if self._shown.get(key) != new:
                self._rows[key] = list(cells)
                self._shown[key] = new
                changed.append(key)
        if order is None:
            kept = [k for k in self.order if k in self._rows]
            order = kept + [k for k in upserts if k not in set(kept)]
        self.set_order([key for key in order if key in self._rows], keep)
        self.update_rows(changed)
