"""One module per group of public routes, each an `APIRouter` that `create_app` includes."""
