"""The `simsearch` command: one entry point for every role.

    simsearch serve router|shard|embedder [--host H] [--port P]   (flags also as SIMSEARCH_*)
    simsearch index build|import-h5|gc …
    simsearch up | scale N | status | down          (a local cluster of processes)
    simsearch search IMAGE [--url ROUTER] [-k K] [--collection C] [--filter JSON]
    simsearch models                                (the model registry)

Every command parses flags → loads typed settings (exit 2 with a clear message) → runs.
Only the parser is built for every command: each command names its runner as
`module:function` (`handler`) and that module, with its role's dependencies (faiss,
h5py, torch), is imported only when the command runs, so an image with one role's extra
(`pip install simsearch[router]`) runs that role (`tests/integration/router/test_venv.py`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from simsearch import __version__
from simsearch.common.errors import ConfigError, SimsearchError
from simsearch.common.settings import ServiceSettings


def _run(app: Any, settings: ServiceSettings) -> int:
    """Serve `app` with uvicorn behind the edge limits (common/edge.py); our JSON logging,
    graceful shutdown within 10 s."""
    import uvicorn

    from simsearch.common.edge import protocol_for

    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=10,
        http=protocol_for(settings.edge_limits()),
        timeout_keep_alive=settings.http_keepalive_s,
        limit_concurrency=settings.http_limit_concurrency,
    )
    return 0


def serve_embedder(args: argparse.Namespace) -> int:
    """`simsearch serve embedder`: the only role with a model, so the only one with
    `--model`, `--device` and `--weights`."""
    from simsearch.common.settings import load_settings
    from simsearch.common.telemetry import configure_logging
    from simsearch.embedder.app import build_engine, create_app
    from simsearch.embedder.settings import EmbedderSettings

    settings = load_settings(
        EmbedderSettings,
        host=args.host,
        port=args.port,
        model=args.model,
        device=args.device,
        weights=args.weights,
    )
    configure_logging("embedder", settings.log_level, settings.log_format)
    engine = build_engine(settings)  # fail before binding the port if weights are missing
    app = create_app(settings, engine)
    return _run(app, settings)


def serve_router(args: argparse.Namespace) -> int:
    """`simsearch serve router`."""
    from simsearch.common.settings import load_settings
    from simsearch.common.telemetry import configure_logging
    from simsearch.router.app import create_app
    from simsearch.router.settings import RouterSettings

    settings = load_settings(RouterSettings, host=args.host, port=args.port)
    configure_logging("router", settings.log_level, settings.log_format)
    app = create_app(settings)
    return _run(app, settings)


def serve_shard(args: argparse.Namespace) -> int:
    """`simsearch serve shard`."""
    from prometheus_client import CollectorRegistry

    from simsearch.common.settings import load_settings
    from simsearch.common.telemetry import configure_logging
    from simsearch.shard.app import build_service, create_app
    from simsearch.shard.metrics import ShardMetrics
    from simsearch.shard.settings import ShardSettings

    settings = load_settings(ShardSettings, host=args.host, port=args.port)
    configure_logging("shard", settings.log_level, settings.log_format)
    # fail before binding the port on a bad store URI, index name or topology file
    service = build_service(settings, ShardMetrics(CollectorRegistry()))
    app = create_app(settings, service)
    return _run(app, settings)


def list_models(_: argparse.Namespace) -> int:
    """`simsearch models`: the registry's names, dims and preprocessing."""
    from simsearch.models.registry import REGISTRY

    for spec in REGISTRY.values():
        pre = spec.preprocessing
        print(f"{spec.name:20s} dim={spec.dim:<5d} resize={pre.resize} crop={pre.crop}")
    return 0


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`simsearch serve ROLE`, one sub-parser per role: a flag that a role would ignore
    (`serve router --model`) is an error instead of a silent no-op."""
    serve = sub.add_parser("serve", help="run one service in the foreground")
    roles = serve.add_subparsers(dest="role", required=True, metavar="{embedder,router,shard}")
    for role in ("embedder", "router", "shard"):
        parser = roles.add_parser(role, help=f"the {role}")
        parser.add_argument("--host", help="interface to bind (SIMSEARCH_HOST)")
        parser.add_argument("--port", type=int, help="port (SIMSEARCH_PORT)")
        parser.set_defaults(handler=f"{__name__}:serve_{role}")
        if role == "embedder":
            parser.add_argument("--model", help="embedding model (SIMSEARCH_MODEL)")
            parser.add_argument("--device", help="auto|cpu|cuda|mps (SIMSEARCH_DEVICE)")
            parser.add_argument("--weights", help="file/URI or 'random' (SIMSEARCH_WEIGHTS)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; flags left unset fall back to SIMSEARCH_* variables.

    It imports only the parser modules (standard library): no role's code.
    """
    from simsearch.indexer.parsers import add_parsers as add_index_parsers
    from simsearch.local.parsers import add_parsers as add_local_parsers

    parser = argparse.ArgumentParser(prog="simsearch", description=__doc__.splitlines()[0])
    # what an image runs is checked against the chart's appVersion with this (#16)
    parser.add_argument("--version", action="version", version=f"simsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    models = sub.add_parser("models", help="list the embedding models")
    models.set_defaults(handler=f"{__name__}:list_models")
    add_index_parsers(sub)
    add_local_parsers(sub)
    return parser


def runner(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The function that runs the parsed command, its module imported now (`handler`)."""
    module, _, name = str(args.handler).partition(":")
    if module in ("__main__", __name__):  # `python -m simsearch.cli`: this very module
        return globals()[name]  # type: ignore[no-any-return]
    func: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; configuration problems exit 2 with one readable message.

    So does a role's dependency that this install lacks (`index build` in a router-only
    image): each role's dependencies are an extra, installed only where the role runs.

    Any other domain failure (the object store unreachable mid-build, a corrupt index
    file, ...) exits 1 with its reason on one line, which already names the endpoint and
    the object: a Python traceback there read like a bug in simsearch, and buried the one
    line an operator needs (found by the fault matrix, tests/integration/cluster/test_faults.py).
    """
    args = build_parser().parse_args(argv)
    try:
        return runner(args)(args)
    except ModuleNotFoundError as err:
        if (err.name or "simsearch").startswith("simsearch"):
            raise  # our own module: a bug, not an install choice
        print(
            f"simsearch {args.command}: {err} (install the extra of this role, e.g. "
            "pip install 'simsearch[indexer]'; see pyproject.toml)",
            file=sys.stderr,
        )
        return 2
    except ConfigError as err:
        print(f"simsearch: configuration error: {err.reason}", file=sys.stderr)
        return 2
    except SimsearchError as err:
        print(f"simsearch: {err.reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
