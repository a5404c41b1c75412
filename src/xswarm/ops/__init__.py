"""Operations on a server: ``xswarm install/doctor/status/backup/rollback/upgrade/reloadctl``.

One command per module, each exposing a click command named ``command``. Shared parts:
``layout`` (where things live, relocatable under ``--root``), ``units`` (rendering the unit
files and HAProxy config, pure), ``checks`` (doctor's rules, pure), ``releases`` (venv per
release, ``current``, history), ``rolling`` (health-gated restarts), ``systemctl`` (the only
module that runs systemctl/journalctl), ``health`` (/healthz, /readyz) and ``haproxy`` (its
admin socket).
"""
