"""The experiment routes: POST /v1/experiments starts one, POST /v1/experiments/{name}/stop stops it (admin scope);
GET /v1/experiments lists them and GET /v1/experiments/{name}/report gives a report (read scope). What they do is
in `experiments.catalog`; `huaxiang experiment … --server URL` calls them while a server holds the store. GET
/v1/exposures/log (admin) downloads the explored traffic for off-policy evaluation (`huaxiang exposures export
--server URL`): only the answers to the key's tenants' users.

A key bound to tenants sees, starts and stops only experiments of one of its tenants; an experiment over every
tenant is the platform's own (keys for every tenant)."""
from __future__ import annotations

import os
import tempfile
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from pydantic import BaseModel, Field

from ...experiments.catalog import parse_variants
from ..deps import need, service
from ..keys import Key

router = APIRouter()


class NewExperiment(BaseModel):
    name: str = Field(max_length=64, description="letters, digits, '_', '.', '-'")
    variants: str = Field(max_length=2000, description="NAME=MODEL,… the control first, e.g. "
                          "control=itemknn,treatment=hybrid (MODEL: a registry spec, name or name@version)")
    split: str | None = Field(None, max_length=500, description="weights, e.g. 50,50 (default: equal)")
    tenant: str | None = Field(None, max_length=100, description="only this tenant's users (default: every tenant)")


def _tenants(tenant: str | None):
    return None if tenant is None else frozenset([tenant])


def visible(request: Request, key: Key, name: str):
    """The experiment `name` if the key may see it (else 404, as if unknown)."""
    found = service(request).visible_experiment(name, key.tenants)
    if found is None:
        raise HTTPException(404, f"no experiment {name!r}")
    return found


@router.post("/v1/experiments", status_code=201)
def create(request: Request, new: NewExperiment, key: Key = need("admin")) -> dict:
    if not key.covers(_tenants(new.tenant)):
        raise HTTPException(403, "a key bound to tenants starts experiments on one of its own tenants only (--tenant)")
    return service(request).create_experiment(new.name, parse_variants(new.variants, new.split), new.tenant).listing()


@router.get("/v1/experiments")
def listing(request: Request, key: Key = need("read")) -> list[dict]:
    return [e.listing() for e in service(request).all_experiments(key.tenants)]


@router.post("/v1/experiments/{name}/stop")
def stop(request: Request, name: str, key: Key = need("admin")) -> dict:
    visible(request, key, name)
    return service(request).stop_experiment(name).listing()


@router.get("/v1/experiments/{name}/report")
async def report(request: Request, name: str, key: Key = need("read")) -> dict:
    visible(request, key, name)
    return await run_in_threadpool(service(request).experiment_report, name)


@router.get("/v1/exposures/log")
async def exposures_log(request: Request, format: Literal["parquet", "csv"] = "parquet",
                        until: datetime | None = Query(None, description="only exposures shown before then (UTC)"),
                        key: Key = need("admin")) -> FileResponse:
    fd, path = tempfile.mkstemp(prefix="huaxiang-log-", suffix=f".{format}")
    os.close(fd)
    try:
        got = await run_in_threadpool(service(request).export_exposures, path, until, key.tenants)
    except BaseException:
        os.unlink(path)
        raise
    return FileResponse(path, filename=f"exposures.{format}", background=BackgroundTask(os.unlink, path),
                        headers={"X-Rows": str(got["rows"]), "X-Clicks": str(got["clicks"])})
