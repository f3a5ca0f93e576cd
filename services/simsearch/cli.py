"""The `simsearch` command: one entry point for every role.

    simsearch serve router|shard|embedder [--host H] [--port P]   (flags also as SIMSEARCH_*)
    simsearch index build|import-h5|gc …
    simsearch up | scale N | status | down          (a local cluster of processes)
    simsearch search IMAGE [--url ROUTER] [-k K]
    simsearch models                                (the model registry)

Every command parses flags → loads typed settings (exit 2 with a clear message) → runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

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


def _serve_embedder(args: argparse.Namespace) -> int:
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


def _serve_router(args: argparse.Namespace) -> int:
    from simsearch.common.settings import load_settings
    from simsearch.common.telemetry import configure_logging
    from simsearch.router.app import create_app
    from simsearch.router.settings import RouterSettings

    settings = load_settings(RouterSettings, host=args.host, port=args.port)
    configure_logging("router", settings.log_level, settings.log_format)
    app = create_app(settings)
    return _run(app, settings)


def _serve_shard(args: argparse.Namespace) -> int:
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


def _serve(args: argparse.Namespace) -> int:
    if args.role == "shard":
        return _serve_shard(args)
    if args.role == "router":
        return _serve_router(args)
    return _serve_embedder(args)


def _models(_: argparse.Namespace) -> int:
    from simsearch.models.registry import REGISTRY

    for spec in REGISTRY.values():
        pre = spec.preprocessing
        print(f"{spec.name:20s} dim={spec.dim:<5d} resize={pre.resize} crop={pre.crop}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; flags left unset fall back to SIMSEARCH_* variables."""
    parser = argparse.ArgumentParser(prog="simsearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("role", choices=("embedder", "router", "shard"))
    serve.add_argument("--host", help="interface to bind (SIMSEARCH_HOST)")
    serve.add_argument("--port", type=int, help="port (SIMSEARCH_PORT)")
    serve.add_argument("--model", help="embedder model (SIMSEARCH_MODEL)")
    serve.add_argument("--device", help="auto|cpu|cuda|mps (SIMSEARCH_DEVICE)")
    serve.add_argument("--weights", help="weights file/URI or 'random' (SIMSEARCH_WEIGHTS)")
    serve.set_defaults(func=_serve)
    models = sub.add_parser("models", help="list the embedding models")
    models.set_defaults(func=_models)
    from simsearch.indexer.commands import add_parsers as add_index_parsers
    from simsearch.local.commands import add_parsers as add_local_parsers

    add_index_parsers(sub)
    add_local_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; configuration problems exit 2 with one readable message.

    Any other domain failure (the object store unreachable mid-build, a corrupt index
    file, ...) exits 1 with its reason on one line, which already names the endpoint and
    the object: a Python traceback there read like a bug in simsearch, and buried the one
    line an operator needs (found by the fault matrix, tests/integration/test_faults.py).
    """
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as err:
        print(f"simsearch: configuration error: {err.reason}", file=sys.stderr)
        return 2
    except SimsearchError as err:
        print(f"simsearch: {err.reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
