"""The subcommands of ``xswarm``: one module each, named after the command it defines.

Each module holds one click command named ``command`` and nothing else of substance: its
options, a call into the concept package that does the work (``client``, ``engine``, ``tui``,
``ops``), the printing and the exit status. ``xswarm.cli`` imports them only when asked for.
"""
