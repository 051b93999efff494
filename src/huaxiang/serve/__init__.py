"""The HTTP service: `huaxiang serve` (FastAPI + uvicorn) and its API keys."""
