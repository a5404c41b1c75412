"""haproxy.cfg as ``xswarm install`` renders it, pointed at a test's own files.

A test's HAProxy is a plain process of its own: the machine's /run, /var/lib/haproxy and
syslog are not the test's, and a state file left there by a real install must not decide
which servers the test's HAProxy starts in drain.
"""

from __future__ import annotations

from pathlib import Path

from xswarm.ops import haproxy, haproxy_state
from xswarm.ops.layout import Layout

SYSLOG_LINE = "log /dev/log local0 warning"


def for_test(text: str, layout: Layout, log_level: str = "warning") -> str:
    """``text`` with its admin socket and server-state file under ``layout``'s staging root,
    its log on stderr at ``log_level``, and room for a test's few connections (an 8000
    connection limit needs more descriptors than a test process may have)."""
    socket = haproxy.admin_socket(layout)
    socket.parent.mkdir(parents=True, exist_ok=True)
    text = text.replace(haproxy.ADMIN_SOCKET, str(socket))
    text = text.replace(haproxy_state.SERVER_STATE, str(haproxy_state.state_file(layout)))
    text = text.replace(SYSLOG_LINE, f"log stderr local0 {log_level}")
    return text.replace("maxconn 8000", "maxconn 200")


def install_config(text: str, layout: Layout, log_level: str = "warning") -> Path:
    """:func:`for_test`'s config written where ``xswarm install`` puts haproxy.cfg
    (``layout.haproxy_config``): drain and undrain save the server states for the config
    they find there, and warn when there is none."""
    path = layout.haproxy_config
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(for_test(text, layout, log_level))
    return path


def answers(socket: Path) -> bool:
    """Whether HAProxy answers on its admin socket. A test waits for this, not for the
    socket's file: HAProxy binds a temporary name, renames it into place and only then
    listens, so for a moment the file is there and a connection is refused."""
    try:
        haproxy.send(socket, "show info\n")
    except OSError:
        return False
    return True
