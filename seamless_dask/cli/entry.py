"""The ``seamless-dask`` command line: a thin front over the Python API.

User mistakes end with a one-line error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from ..exceptions import ClusterError, ModelError, SeamlessError, SeamlessWarning, StorageError
from ..options import SEGMENT_OPTIONS, WEIGHTS_KINDS, Option
from . import commands as handlers
from .values import CLI_CHOICES, CLI_TYPES, int_list, overlap, seconds


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the same clean-up runs as for Ctrl-C (SIGINT)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``seamless-dask`` command line on ``argv`` (default: ``sys.argv[1:]``); return the exit
    status.
    """
    arguments = parser()
    args = arguments.parse_args(argv)
    restore = _handle_sigterm()
    quiet = _quiet_distributed(getattr(args, "debug", False))
    if argv is None and not getattr(args, "debug", False):
        # the program itself (not a caller's main([...])): libraries' coroutines left unawaited by
        # a failed remote write print "Exception ignored in ..." tracebacks as the interpreter
        # exits, after our one line; they say nothing the line did not
        sys.unraisablehook = _ignore_unraisable
    try:
        with warnings.catch_warnings():
            if not getattr(
                args, "debug", False
            ):  # libraries' notes to their developers, not to users
                for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
                    warnings.simplefilter("ignore", category)
            warnings.simplefilter("always", SeamlessWarning)
            warnings.showwarning = _show_warning
            args.run(args)
    except ModelError as error:  # the model's code tried to exit: its fault, not the command line's
        return _fail(error, 1)
    except (ClusterError, StorageError) as error:  # the cluster or the store: resumable, says how
        return _fail(error, 3)
    except SeamlessError as error:
        return _fail(error, 2)
    except KeyboardInterrupt as interrupt:
        what = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
        print(
            f"seamless-dask: {what}; nothing incomplete was left at OUTPUT: rerun it (a .zarr: "
            f"with --resume)",
            file=sys.stderr,
        )
        return 143 if isinstance(interrupt, Terminated) else 130
    except Exception as error:
        if getattr(args, "debug", False):
            raise
        # Not ours: most often the model itself (wrong input size, out of memory). One line, then
        # exit 1.
        return _fail(error, 1, prefix=f"{type(error).__name__}: ")
    finally:
        restore()
        quiet()
    return 0


def _ignore_unraisable(unraisable: Any) -> None:
    """Drop an exception Python cannot raise anywhere (see ``main``)."""


def _quiet_distributed(debug: bool) -> Any:
    """Keep distributed's own log lines (reconnect attempts, their tracebacks) off the terminal for
    the run, unless ``--debug``: what went wrong is said in our one line. Returns the undo.
    """
    import logging

    import distributed  # noqa: F401  (its logging set up first, levels and all)

    names = [
        name
        for name in ("distributed", "tornado", *logging.root.manager.loggerDict)
        if name.split(".")[0] in ("distributed", "tornado")
    ]
    loggers = [logging.getLogger(name) for name in dict.fromkeys(names)]
    levels = [logger.level for logger in loggers]
    if not debug:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)

    def undo() -> None:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

    return undo


def _show_warning(  # noqa: PLR0917  (warnings.showwarning's own signature)
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Our warnings as one line, ``seamless-dask: warning: ...``; others as Python shows them."""
    if issubclass(category, SeamlessWarning):
        print(f"seamless-dask: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno))


def _handle_sigterm() -> Any:
    """Turn SIGTERM (a cluster's or a scheduler's stop) into :class:`Terminated` while a command runs."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _fail(error: BaseException, status: int, prefix: str = "") -> int:
    message = " ".join(str(error).split()) or type(error).__name__
    notes = " ".join(getattr(error, "__notes__", []))
    print(
        f"seamless-dask: error: {prefix}{message}{' (' + notes + ')' if notes else ''}",
        file=sys.stderr,
    )
    return status


def parser() -> argparse.ArgumentParser:
    """The ``seamless-dask`` argument parser, every command and flag (the docs' synopsis is checked against it)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="seamless-dask", description="Seamless tiled segmentation of huge images."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    plan = commands.add_parser(
        "plan", help="show the tile grid and chunk plan for an image size, reading no pixels"
    )
    plan.add_argument("height", type=int)
    plan.add_argument("width", type=int)
    plan.add_argument("--tile-size", type=int, default=256)
    plan.add_argument("--overlap", type=overlap, default=64)
    plan.add_argument("--chunks", type=int, default=2048, help="target pixels per chunk side")
    plan.add_argument(
        "--classes", type=int, default=2, help="model output channels, for the memory estimate"
    )
    plan.add_argument("--bands", type=int, default=3, help="input bands, for the memory estimate")
    plan.add_argument("--dtype", default="uint8", help="input dtype, for the memory estimate")
    plan.add_argument(
        "--weights", default="trim", choices=WEIGHTS_KINDS, help="trust map, for the halo strips"
    )
    plan.add_argument(
        "--gpu-workers", type=int, default=0, help="model workers, for the scheduler's load"
    )
    plan.add_argument(
        "--tiles-per-second", type=float, default=100.0, help="one model worker's speed"
    )
    plan.set_defaults(run=handlers.plan)

    _add_segment(commands)

    evaluate = commands.add_parser(
        "evaluate", help="IoU, Dice, precision, recall of a class map against the truth"
    )
    evaluate.add_argument(
        "prediction", metavar="PRED", help="a written class map (COG, GeoTIFF or zarr)"
    )
    evaluate.add_argument("truth", metavar="TRUTH", help="the reference labels, on the same grid")
    evaluate.add_argument("--num-classes", type=int, required=True)
    evaluate.add_argument(
        "--ignore-index", type=int, default=None, help="a truth value to leave out"
    )
    evaluate.add_argument("--json", action="store_true", help="print the scores as JSON")
    evaluate.set_defaults(run=handlers.evaluate)

    _add_vectorize(commands)

    k8s = commands.add_parser(
        "k8s",
        help="print Kubernetes manifests (dask operator) for a cluster of GPU workers, or a job on one",
        description="Print a DaskCluster of GPU workers (kubectl apply -f -), or with --job INPUT OUTPUT ... a "
        "DaskJob that starts the cluster, runs `seamless-dask segment` on it and tears it down; "
        "then a "
        "NetworkPolicy that lets only the cluster's own pods, its clients and the operator reach "
        "it. Needs the "
        "kubernetes extra: pip install 'seamless_dask[kubernetes]'.",
    )
    k8s.add_argument("--name", default="seamless", help="cluster name (a DNS label)")
    k8s.add_argument("--image", default=None, help="the image built from deployment/Dockerfile")
    k8s.add_argument("--gpu-workers", type=int, default=2, help="worker pods, one GPU each")
    k8s.add_argument("--worker-threads", type=int, default=4, help="dask threads per worker")
    k8s.add_argument(
        "--model-tasks-per-gpu",
        type=int,
        default=2,
        help="model tasks a worker runs side by side on its GPU (it advertises GPU=N)",
    )
    k8s.add_argument("--worker-memory", default="32Gi")
    k8s.add_argument("--worker-cpu", default="8")
    k8s.add_argument(
        "--node-selector", action="append", default=[], metavar="KEY=VALUE", help="GPU node label"
    )
    k8s.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for all pods (no secrets)",
    )
    k8s.add_argument(
        "--secret-env",
        action="append",
        default=[],
        metavar="NAME=SECRET:KEY",
        help="environment for all pods from key KEY of the Kubernetes Secret SECRET",
    )
    k8s.add_argument(
        "--env-from-secret",
        action="append",
        default=[],
        metavar="SECRET",
        help="every key of SECRET as environment",
    )
    k8s.add_argument(
        "--tls-secret",
        metavar="SECRET",
        help="a Secret with ca.crt, tls.crt, tls.key: the cluster speaks tls:// only",
    )
    k8s.add_argument(
        "--client-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label of pods (a notebook) the NetworkPolicy lets reach the cluster (default seamless-dask/client=true)",
    )
    k8s.add_argument(
        "--job",
        nargs=argparse.REMAINDER,
        metavar="SEGMENT_ARGS",
        help="INPUT OUTPUT --model SPEC ... (last)",
    )
    k8s.set_defaults(run=handlers.k8s)

    demo = commands.add_parser(
        "demo", help="segment a synthetic scene naively and seamlessly; write seams.png"
    )
    demo.add_argument("--out", default="demo-output")
    demo.add_argument("--size", type=int, default=1024)
    demo.set_defaults(run=handlers.demo)
    return parser


def _add_vectorize(commands: Any) -> None:
    vectorize = commands.add_parser(
        "vectorize",
        help="every object of a class map as a polygon: GeoParquet, GeoPackage, FlatGeobuf",
    )
    vectorize.add_argument("labels", metavar="LABELS", help="a class map (COG, GeoTIFF or zarr)")
    vectorize.add_argument("target", metavar="OUT", help="OUT.parquet, OUT.gpkg or OUT.fgb")
    vectorize.add_argument(
        "--connectivity", type=int, default=1, choices=(1, 2), help="2: corners join objects too"
    )
    vectorize.add_argument(
        "--classes",
        type=int_list,
        default=None,
        help="the classes to vectorize (default: all but 0)",
    )
    vectorize.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    vectorize.set_defaults(run=handlers.vectorize)


def _add_segment(commands: Any) -> None:
    seg = commands.add_parser(
        "segment",
        help="segment a raster or slide into a COG (.tif), an OME-Zarr (.ome.zarr) or a zarr store (.zarr)",
        description="Segment INPUT (GeoTIFF/COG, zarr, netCDF; slides: OME-Zarr, OME-TIFF, SVS, NDPI) with a model, "
        "seamlessly, and write OUTPUT: a Cloud-Optimized GeoTIFF when it ends in .tif/.tiff, an "
        "OME-Zarr pyramid "
        "when it ends in .ome.zarr, a zarr store when it ends in .zarr. With --label-name, OUTPUT "
        "is left out and "
        "the labels go into INPUT's (an OME-Zarr's) labels/NAME group.",
    )
    seg.add_argument("input", metavar="INPUT")
    seg.add_argument("target", metavar="OUTPUT", nargs="?")
    seg.add_argument(
        "--model", required=True, metavar="SPEC", help="'pkg.module:factory' or a TorchScript file"
    )
    for option in SEGMENT_OPTIONS:  # segment's own options, flag by flag: one list, options.py
        if option.on_cli:
            _add_option(seg, option)
    seg.add_argument(
        "--level",
        type=int,
        default=0,
        metavar="N",
        help="INPUT's pyramid level (default 0: full size)",
    )
    seg.add_argument(
        "--label-name", default=None, metavar="NAME", help="write into INPUT's OME-Zarr labels/NAME"
    )
    seg.add_argument(
        "--variable",
        default=None,
        metavar="NAME",
        help="the variable of a zarr/netCDF INPUT to segment",
    )
    seg.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="a dask scheduler, e.g. tcp://10.0.0.5:8786 or tls://...; or threads (no cluster); default: a local "
        "cluster",
    )
    seg.add_argument(
        "--connect-timeout",
        type=seconds,
        default=None,
        metavar="S",
        help="seconds to reach --scheduler (default 30)",
    )
    seg.add_argument(
        "--worker-wait",
        type=seconds,
        default=300.0,
        metavar="S",
        help="seconds to wait for a first worker to join",
    )
    seg.add_argument(
        "--tls-ca-file", metavar="PEM", help="TLS: the CA of a tls:// cluster (or of the local one)"
    )
    seg.add_argument("--tls-cert", metavar="PEM", help="TLS: this client's certificate")
    seg.add_argument("--tls-key", metavar="PEM", help="TLS: this client's private key")
    seg.add_argument("--resume", action="store_true", help="finish an interrupted .zarr output")
    seg.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    seg.add_argument(
        "--quicklook", metavar="PNG", help="also write a quicklook PNG beside the input"
    )
    for flag, name, what in (("--instances", "IDS", "ids (.zarr, .ome.zarr, .tif)"),
                             ("--vector", "FILE", "polygons (.parquet, .gpkg, .fgb)")):  # fmt: skip
        seg.add_argument(flag, metavar=name, help=f"also write the class map's objects as {what}")
    seg.add_argument("--no-progress", dest="progress", action="store_false")
    seg.add_argument("--debug", action="store_true", help="show tracebacks")
    seg.set_defaults(run=_segment)


def _add_option(parser: Any, option: Option) -> None:
    """``option``'s flag, with its default and help from the one list."""
    if isinstance(option.default, bool):
        parser.add_argument(option.flag, action="store_true", help=option.help)
        return
    choices = CLI_CHOICES.get(option.name) or (
        [c for c in option.choices if c is not None] if option.choices else None
    )
    default = "none" if option.name == "activation" and option.default is None else option.default
    parser.add_argument(
        option.flag,
        type=CLI_TYPES.get(option.name),
        default=default,
        choices=choices,
        metavar=None if choices else option.metavar,
        help=f"{option.help} (default {default})",
    )


def _segment(args: argparse.Namespace) -> None:
    from ..exceptions import OptionError
    from .job import SegmentRequest, TLSFiles, run_segment

    tls_args = (args.tls_ca_file, args.tls_cert, args.tls_key)
    if any(tls_args) and not all(tls_args):
        raise OptionError(
            "TLS needs all of --tls-ca-file, --tls-cert and --tls-key, got only some of them"
        )

    if (args.target is None) == (args.label_name is None):
        raise OptionError(
            "give OUTPUT, or --label-name NAME to write the labels into INPUT's OME-Zarr "
            "labels/NAME group, not both"
            if args.target
            else "OUTPUT is missing: give the file to write (.tif, .ome.zarr, .zarr), or --label-name NAME"
        )
    if args.region_crs is not None and args.region is None:
        raise OptionError(
            "--region-crs says in which CRS --region's file is, and no --region was given: add "
            "--region FILE, or leave --region-crs out"
        )
    options = {o.name: getattr(args, o.name) for o in SEGMENT_OPTIONS if o.on_cli}
    if options["activation"] == "none":
        options["activation"] = None
    request = SegmentRequest(
        source=args.input,
        target=args.target or args.input,
        label_name=args.label_name,
        level=args.level,
        model=args.model,
        variable=args.variable,
        scheduler=args.scheduler,
        resume=args.resume,
        overwrite=args.overwrite,
        quicklook=args.quicklook,
        instances=args.instances,
        vector=args.vector,
        progress=args.progress,
        tls=TLSFiles(*tls_args) if all(tls_args) else None,
        connect_timeout=args.connect_timeout,
        worker_wait=args.worker_wait,
        **options,
    )
    print(run_segment(request).summary())


if __name__ == "__main__":
    sys.exit(main())
