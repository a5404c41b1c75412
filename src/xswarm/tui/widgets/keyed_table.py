"""A DataTable fed whole rows by key, that touches only the cells whose content changed.

Textual's ``DataTable.sort`` orders the rows once; live rows then drift out of order. Here the
caller hands the wanted order with every batch and the table re-sorts only when it differs.
The cursor follows its row (by key) through re-sorts, so an action aimed at "this row" still
means the same call after the table moved under the operator's eyes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CursorType, RowDoesNotExist


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int
    numeric: bool = False


def signature(cell: Text) -> tuple[str, str, str | None]:
    """What makes two cells look the same (rich's Text equality ignores the base style)."""
    return cell.plain, str(cell.style), cell.justify


class KeyedTable(DataTable[Text]):
    """Rows keyed by an id; cells are ``rich.text.Text`` (never markup) from the caller.

    The first column's text is the row's key (the call id, the instance name): ordering
    reads it back from there.
    """

    def __init__(self, *, id: str | None = None, cursor_type: CursorType = "row") -> None:
        super().__init__(cursor_type=cursor_type, zebra_stripes=True, id=id)
        self._specs: tuple[ColumnSpec, ...] = ()
        self._shown: dict[str, tuple[tuple[str, str, str | None], ...]] = {}

    def set_columns(
        self, specs: Sequence[ColumnSpec], labels: Mapping[str, str] | None = None
    ) -> None:
        """Replace the columns (and so every row) when the layout or the sort marker changes."""
        labels = labels or {}
        specs = tuple(
            ColumnSpec(s.key, labels.get(s.key, s.label), s.width, s.numeric) for s in specs
        )
        if specs == self._specs:
            return
        self.clear(columns=True)
        self._shown.clear()
        self._specs = specs
        for spec in specs:
            self.add_column(
                Text(spec.label, justify="right" if spec.numeric else "left"),
                width=spec.width,
                key=spec.key,
            )

    @property
    def column_keys(self) -> list[str]:
        return [spec.key for spec in self._specs]

    def selected_key(self) -> str | None:
        """The key of the row under the cursor, or None in an empty table."""
        if self.row_count == 0:
            return None
        try:
            row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except (RowDoesNotExist, IndexError):
            return None
        return row_key.value

    def drop_all(self) -> None:
        self.clear()
        self._shown.clear()

    def apply_rows(
        self,
        upserts: Mapping[str, Sequence[Text]],
        removals: Iterable[str] = (),
        order: Sequence[str] | None = None,
        keep: str | None = None,
    ) -> None:
        """Add, update (changed cells only) and remove rows, then put them in ``order``.

        The cursor ends on the row ``keep`` names (default: the row it is on now).
        """
        keep = keep or self.selected_key()
        for key in removals:
            if key in self._shown:
                self.remove_row(key)
                del self._shown[key]
        for key, cells in upserts.items():
            new = tuple(signature(cell) for cell in cells)
            old = self._shown.get(key)
            if old is None:
                self.add_row(*cells, key=key)
            else:
                for column, cell, before, after in zip(
                    self.column_keys, cells, old, new, strict=True
                ):
                    if before != after:
                        self.update_cell(key, column, cell)
            self._shown[key] = new
        if order is not None:
            self._put_in_order(order)
        if keep is not None and keep in self._shown:
            index = self.get_row_index(keep)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)

    def _put_in_order(self, order: Sequence[str]) -> None:
        current = [row.key.value for row in self.ordered_rows]
        wanted = [key for key in order if key in self._shown]
        if current == wanted:
            return
        rank = {key: index for index, key in enumerate(wanted)}
        last = len(rank)
        self.sort(self._specs[0].key, key=lambda cell: rank.get(cell.plain, last))
