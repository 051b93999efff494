"""The JSON routes of `huaxiang serve`, one router per module (create_app includes them in this order):

- `health.py`: GET /healthz (no key), GET /metrics
- `read.py`: GET /v1/users/{user_id}/profile, /v1/users/{user_id}/recommendations, /v1/search, /v1/segments (read scope)
- `experiments.py`: POST /v1/experiments, POST /v1/experiments/{name}/stop (admin scope), GET /v1/experiments,
  GET /v1/experiments/{name}/report (read scope); embedded service only
- `write.py`: DELETE /v1/users/{user_id} (admin scope), POST /v1/events (write scope)
"""
