"""Widgets of the dashboard: keyed tables that repaint only changed cells, and panels."""
