"""The baseline for ingest: a FastAPI app on the same route that only answers 200, served by
uvicorn exactly as `sagebridge api` serves the bridge. The bridge/bare ratio is what stays
comparable across machines and noisy neighbours."""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

app = FastAPI(title="bare")


@app.post("/webhooks/kommo/{secret}")
async def webhook(secret: str) -> dict[str, int]:
    return {"received": 1, "queued": 1, "skipped": 0}


@app.get("/healthz")
@app.get("/readyz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description="bare FastAPI baseline for the ingest benchmark")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="as API_WORKERS for the bridge")
    args = parser.parse_args()
    if args.workers == 1:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None)
        return
    uvicorn.run(
        "bench.bare:app", host="127.0.0.1", port=args.port, workers=args.workers, log_config=None
    )


if __name__ == "__main__":
    main()
