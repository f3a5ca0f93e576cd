"""The router's HTTP edge: dependency aliases (`deps`), parameters (`params`), routes.

Routes (`api/routes/*.py`) only parse, call `RouterService` and shape the answer; the
rules live in the service and in the pure modules beside it (`query`, `routing`,
`status`). `router/app.py` builds the app from these pieces.
"""
