"""HTTP serving of an artifact with FastAPI (optional extra: ``pip install recpress[serve]``).

Endpoints (OpenAPI schema at ``/openapi.json``, docs at ``/docs``):

* ``GET /recommend?user=ID&k=20``: one user's top-k (original item ids, scores, fallback flag).
* ``POST /recommend`` with ``{"users": [...], "k": 20}``: a batch (at most `max_batch` users).
* ``GET /health``: liveness and sizes. ``GET /metadata``: the artifact manifest and limits.

Bad requests get a 4xx JSON answer ``{"detail": "<one clear message>"}`` (422 invalid values or
types, 404 unknown user under the "error" policy, 413 batch too large); the server keeps serving.
"""

import os
from pathlib import Path
from typing import Any

from recpress.errors import ConfigError
from recpress.serving.recommender import TopKRecommender, UnknownUserError

ENV_ARTIFACT = "RECPRESS_ARTIFACT"
ENV_PREFIX = "RECPRESS_SERVE_"


def _require_fastapi():
    try:
        import fastapi  # noqa: F401
        import pydantic  # noqa: F401
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"HTTP serving needs the optional extra ({err.name} is not installed): "
            "pip install 'recpress[serve]'"
        ) from None


def _format_errors(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body"))
        msg = e.get("msg", "invalid value")
        if e.get("type") == "json_invalid":
            msg = "request body is not valid JSON"
            loc = "body"
        elif e.get("type") == "missing":
            msg = "required field is missing"
        got = e.get("input")
        shown = (
            f" (got {got!r})"
            if e.get("type") != "missing" and not isinstance(got, (dict, list))
            else ""
        )
        parts.append(f"{loc or 'request'}: {msg}{shown}")
    return "; ".join(parts) or "invalid request"


def create_app(
    artifact: str | Path | TopKRecommender,
    max_batch: int = 1000,
    max_k: int = 1000,
    default_k: int = 20,
    unknown: str = "popularity",
):
    """Build the FastAPI app serving `artifact` (a folder path or a ready `TopKRecommender`)."""
    _require_fastapi()
    from typing import Literal

    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

    rec = (
        artifact
        if isinstance(artifact, TopKRecommender)
        else TopKRecommender.load(artifact, unknown=unknown)
    )
    if unknown != rec.unknown:
        rec.unknown = unknown
    rec.warm_up()  # compile/load the selection kernel now, not on the first request
    max_k = max(1, min(int(max_k), rec.n_items))
    default_k = max(1, min(int(default_k), max_k))
    int_ids = rec.user_ids_are_int
    manifest = rec.artifact.manifest

    UserId = StrictInt | StrictStr

    class Recommendation(BaseModel):
        user: UserId = Field(description="the requested user id")
        items: list[UserId] = Field(description="original item ids, best first")
        scores: list[float] = Field(description="scores (popularity counts when fallback)")
        fallback: bool = Field(description="true when the user was unknown: popular items")

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        users: list[UserId] = Field(min_length=1, description=f"at most {max_batch} user ids")
        k: StrictInt = Field(default_k, ge=1, le=max_k)
        exclude_seen: bool = True
        unknown: Literal["popularity", "error"] | None = None

    class BatchResponse(BaseModel):
        k: int
        results: list[Recommendation]

    class HTTPError(BaseModel):
        detail: str

    app = FastAPI(
        title="RecPress recommender",
        version=str(manifest.get("format_version", "1")),
        description=f"Top-K recommendations from a {manifest.get('model', '?')} artifact "
        f"(d={rec.artifact.dim}, {rec.n_users} users, {rec.n_items} items).",
    )
    app.state.recommender = rec
    errors_doc = {c: {"model": HTTPError} for c in (404, 413, 422)}

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": _format_errors(exc.errors())})

    class _Problem(Exception):
        def __init__(self, status: int, message: str):
            self.status, self.message = status, message

    @app.exception_handler(_Problem)
    async def _problem(_request: Request, exc: _Problem):
        return JSONResponse(status_code=exc.status, content={"detail": exc.message})

    def parse_user(u: Any, where: str) -> Any:
        if int_ids and isinstance(u, str):
            try:
                return int(u.strip())
            except ValueError:
                raise _Problem(
                    422, f"{where}: user ids of this artifact are integers, got {u!r}"
                ) from None
        return u

    def answer(users: list[Any], k: int, exclude_seen: bool, policy: str | None):
        try:
            return rec.recommend(users, k, exclude_seen=exclude_seen, unknown=policy).rows()
        except UnknownUserError as err:
            raise _Problem(404, str(err)) from None
        except ConfigError as err:
            raise _Problem(422, str(err)) from None

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness: always 200 while the artifact is loaded."""
        return {"status": "ok", "users": rec.n_users, "items": rec.n_items}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        """The artifact manifest (model, sizes, quantisation, dataset, metrics) and the limits."""
        return {
            "manifest": manifest,
            "limits": {"max_k": max_k, "max_batch": max_batch, "default_k": default_k},
            "unknown_user_policy": rec.unknown,
            "user_id_type": "int" if int_ids else "str",
        }

    @app.get("/recommend", response_model=Recommendation, responses=errors_doc)
    def recommend_one(
        user: str = Query(..., min_length=1, max_length=256, description="original user id"),
        k: int = Query(default_k, ge=1, le=max_k, description=f"list length, 1..{max_k}"),
        exclude_seen: bool = Query(True, description="drop the user's training items"),
        unknown: Literal["popularity", "error"] | None = Query(
            None, description="override the server's unknown-user policy"
        ),
    ):
        """Top-k items for one user."""
        return answer([parse_user(user, "user")], k, exclude_seen, unknown)[0]

    @app.post("/recommend", response_model=BatchResponse, responses=errors_doc)
    def recommend_batch(body: BatchRequest):
        """Top-k items for each user of a batch (same order as given)."""
        if len(body.users) > max_batch:
            raise _Problem(
                413, f"users: batch of {len(body.users)} exceeds the limit of {max_batch}"
            )
        users = [parse_user(u, f"users.{i}") for i, u in enumerate(body.users)]
        return {"k": body.k, "results": answer(users, body.k, body.exclude_seen, body.unknown)}

    return app


def app_from_env():
    """Factory for ``uvicorn --factory`` (used with several workers): reads RECPRESS_ARTIFACT
    and RECPRESS_SERVE_{MAX_BATCH,MAX_K,UNKNOWN,THREADS}."""
    path = os.environ.get(ENV_ARTIFACT)
    if not path:
        raise ConfigError(f"set {ENV_ARTIFACT} to the artifact folder")
    threads = os.environ.get(ENV_PREFIX + "THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return create_app(
        path,
        max_batch=int(os.environ.get(ENV_PREFIX + "MAX_BATCH", 1000)),
        max_k=int(os.environ.get(ENV_PREFIX + "MAX_K", 1000)),
        unknown=os.environ.get(ENV_PREFIX + "UNKNOWN", "popularity"),
    )
