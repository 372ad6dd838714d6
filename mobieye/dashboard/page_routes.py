"""The dashboard's pages: the fleet, one stream (live view, charts, timeline, control) and the
phone camera. Server-rendered by mobieye.dashboard.pages; kept fresh by their scripts."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

import mobieye.dashboard.pages as pages
from mobieye.dashboard.api import Store, unknown

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def index(fleet: Store) -> Response:
    return pages.index_page(fleet.workers(), fleet.streams())


@router.get("/phone", response_class=HTMLResponse)
async def phone_page() -> Response:
    return pages.phone_page()


@router.get("/streams/{stream_id}", response_class=HTMLResponse)
async def stream_page(stream_id: str, fleet: Store) -> Response:
    view = fleet.stream(stream_id)
    if view is None:
        return pages.not_found_page(unknown(stream_id))
    return pages.stream_page(view, fleet.events(50, stream_id))
