"""How an xswarm process runs, for both daemons and every command.

``boundary``: where a process ends, an ``XswarmError`` becoming one line and an exit status.
``listen``: the listening sockets, bound or inherited from systemd, through aiohttp's public API.
``reload_record``: ``reload.json``, how a daemon tells ``xswarm reloadctl`` what a SIGHUP did.
``daemon``: the systemd ``Type=notify`` life of ``xswarm-voice`` and ``xswarm-dashboard``.

Nothing is imported here, so that ``xswarm.cli`` can use ``boundary`` without paying for aiohttp.
"""
