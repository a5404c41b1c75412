"""Screens of the dashboard: main, call detail, help, and the modals that act on a call."""
