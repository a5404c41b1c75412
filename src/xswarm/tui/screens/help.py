"""The keys, in one place, for an operator who has not used the dashboard before."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
xswarm dashboard: live calls on every voice instance the supervisor watches

  ↑ ↓ PgUp PgDn   move in the calls table
  enter           open the call under the cursor (sparklines, words, events)
  i               suggest something to the call under the cursor
  h               hang up the call under the cursor (asks first)
  /               filter calls by id, caller, instance or transport; escape clears
  o  /  O         sort by the next column  /  reverse the order (or click a header)
  t               top 20 by worst p99 latency, most late frames, longest, loudest, then all
  g               go to a call: type its id (or part of it), enter puts the cursor on it
  r               reconnect to the supervisor now
  ?               command palette: every action on every call, by call id
  f1              this help
  escape          back / close
  q, ctrl+c       quit

Actions name the call by its id, never by its row: sorting, filtering and live updates
cannot redirect a hang-up to another caller. The line above the calls counts them by state;
the instances panel's border totals the fleet (free slots, instances that are full). A
dimmed table and the banner at the top mean the figures are stale while the dashboard
reconnects; after reconnecting it reloads everything from the supervisor."""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Close"),
        Binding("q", "app.pop_screen", "Close", show=False),
        Binding("f1", "app.pop_screen", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(HELP, markup=False, id="help-text")
