"""Publish the dashboards and their datasource to a running Grafana through its HTTP API.

For Grafana instances that are not provisioned from files (``docker-compose.yml`` provisions
from files instead). Uses grafana-client. The datasource keeps the uid the dashboards refer to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError
from sqlalchemy.engine import make_url

from dashboards import DATASOURCE_TYPE, DATASOURCE_UID, dashboard_files

FOLDER_UID = "infersentry"
FOLDER_TITLE = "infersentry"


@dataclass(frozen=True)
class PublishResult:
    datasource: str  # "created" or "updated"
    dashboards: tuple[str, ...]


def datasource_payload(db_url: str, host_override: str | None = None) -> dict[str, Any]:
    """Grafana's datasource JSON for a PostgreSQL SQLAlchemy URL.

    >>> p = datasource_payload("postgresql://u:pw@db:5432/mon")
    >>> p["uid"], p["url"], p["user"], p["jsonData"]["database"], p["secureJsonData"]["password"]
    ('infersentry-pg', 'db:5432', 'u', 'mon', 'pw')
    """
    url = make_url(db_url)
    if not url.drivername.startswith("postgresql"):
        raise ValueError("Grafana's dashboards need the PostgreSQL database (got a "
                         f"{url.drivername} URL)")
    host = host_override or f"{url.host or 'localhost'}:{url.port or 5432}"
    return {
        "name": "infersentry PostgreSQL",
        "uid": DATASOURCE_UID,
        "type": DATASOURCE_TYPE,
        "access": "proxy",
        "url": host,
        "user": url.username or "",
        "isDefault": False,
        "jsonData": {"database": url.database or "", "sslmode": url.query.get("sslmode", "disable"),
                     "postgresVersion": 1500},
        "secureJsonData": {"password": url.password or ""},
    }


def publish(grafana: GrafanaApi, db_url: str, host_override: str | None = None) -> PublishResult:
    """Create or update the datasource, the folder and every dashboard (overwriting older copies)."""
    payload = datasource_payload(db_url, host_override)
    try:
        existing = grafana.datasource.get_datasource_by_uid(DATASOURCE_UID)
        grafana.datasource.update_datasource(existing["id"], {**payload, "id": existing["id"]})
        ds_state = "updated"
    except GrafanaClientError as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
        grafana.datasource.create_datasource(payload)
        ds_state = "created"
    try:
        grafana.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
    except GrafanaClientError as exc:
        if getattr(exc, "status_code", None) not in (409, 412, 400):
            raise
    uids = []
    for path in dashboard_files():
        dashboard = json.loads(path.read_text())
        dashboard.pop("id", None)
        grafana.dashboard.update_dashboard(
            {"dashboard": dashboard, "folderUid": FOLDER_UID, "overwrite": True,
             "message": "published by infersentry"})
        uids.append(dashboard["uid"])
    return PublishResult(ds_state, tuple(uids))
