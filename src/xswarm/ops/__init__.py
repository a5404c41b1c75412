"""Operations on a server: what ``xswarm install/doctor/status/backup/...`` call.

The commands themselves live in ``xswarm.commands``; this package does their work and never
imports click. One module per operation (``install``, ``doctor``, ``status``, ``backup``,
``upgrade``, ``rollback``, ``reloadctl``); what operations share lives in modules of its own,
so that none reads facts through another (``rolling`` reuses ``install``'s unit writer for
upgrade and rollback). The shared parts: ``inventory`` (what is installed and running:
units, instances, listeners, the database), ``layout`` (where things live, relocatable under
``--root``), ``units`` (rendering the unit files and HAProxy config, pure), ``checks``
(doctor's rules, pure), ``releases`` (venv per release, ``current``, history), ``rolling``
(health-gated restarts), ``systemctl`` (the only module that runs systemctl/journalctl),
``health`` (/healthz, /readyz) and ``haproxy`` (its admin socket).
"""
