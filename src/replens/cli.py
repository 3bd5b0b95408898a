"""``replens <command>``: the one entry point. ``main(argv) -> int`` for tests.

Every command takes ``--seed`` and ``--out`` (its run folder, default
``runs/<command>-<time>``), writes its resolved config (``config.yaml``) and a
``metrics.json`` there, and shows progress bars on long work (``--quiet``
hides them). Errors the user can fix are printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import replens.apps.commands
from replens import __version__
from replens.apps.audit import AuditConfig, run_audit
from replens.apps.commands import (
    add_common_options,
    add_config_options,
    non_negative_int,
    open_run_from_args,
    positive_int,
)
from replens.catalog import pretrained_catalog
from replens.config import ConfigError, apply_overrides, load_config, preset_path
from replens.data import open_source
from replens.data.base import DataError
from replens.data.sources import list_sources
from replens.engine import TrainConfig
from replens.engine.result import train_encoder
from replens.evaluate import evaluate_representations
from replens.hub import DownloadError, offline_mode
from replens.models import (
    EmbeddingsError,
    WeightsError,
    create_backbone,
    extract_features,
    list_backbones,
    load_embeddings,
)
from replens.runs import close_runs, open_run, open_run_count
from replens.ssl import list_methods, list_plugins, plugin_class
from replens.world import WorldConfig, generate_world, save_preview
from replens.world.generate import WorldCacheError
from replens.world.vocab import SPURIOUS_CUES

log = logging.getLogger("replens")

Handler = Callable[[argparse.Namespace], int]


_common = add_common_options
_config_opts = add_config_options


# ---------------------------------------------------------------- list
def _list_pretrained() -> int:
    entries = pretrained_catalog()
    width = max(len(e.name) for e in entries)
    kind = None
    for entry in entries:
        if entry.kind != kind:
            kind = entry.kind
            print(f"{kind}:")
        state = "cached    " if entry.cached else "on demand "
        print(f"  {entry.name:<{width}}  {state} {entry.source}  ->  {entry.cache}")
    cached = sum(e.cached for e in entries)
    print(f"\n{cached} of {len(entries)} cached; downloads are {'off (offline mode)' if offline_mode() else 'on'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _list_pretrained()

    sections = {
        "backbones": list_backbones(),
        "data sources": list_sources(),
        "ssl methods": list_methods(),
        "training plug-ins (replens train --NAME)": list_plugins(),
    }
    for title, items in sections.items():
        print(f"{title}:")
        width = max((len(k) for k in items), default=0)
        for name, help_text in items.items():
            print(f"  {name:<{width}}  {help_text}")
        print()
    return 0


# ---------------------------------------------------------------- world
def cmd_world(args: argparse.Namespace) -> int:
    cfg = WorldConfig(n=args.n, size=args.size, domains=args.domains.split(","), seed=args.seed, spurious=args.spurious,
                      spurious_cue=args.cue)
    out = args.out if args.out is not None else Path("runs") / f"world-n{args.n}-s{args.size}-seed{args.seed}"
    run = open_run(out, {"command": "world", **asdict(cfg)}, overwrite=args.overwrite)
    t0 = time.perf_counter()
    path = Path(generate_world(cfg, run.path, progress=not args.quiet))
    elapsed = time.perf_counter() - t0
    metrics: dict[str, Any] = {"scenes": args.n, "seconds": elapsed, "scenes_per_s": args.n / max(elapsed, 1e-9)}
    if args.preview:
        png = Path(args.preview) if args.preview != "auto" else path / "preview.png"
        save_preview(png, path)
        metrics["preview"] = str(png)
        print(f"preview: {png}")
    run.write_metrics(metrics)
    print(f"world: {path} ({args.n} scenes, {elapsed:.1f} s)")
    return 0


# ---------------------------------------------------------------- embed
def _backbone(args: argparse.Namespace) -> Any:
    return create_backbone(args.model, weights=args.weights, pretrained=args.pretrained).eval()


def cmd_embed(args: argparse.Namespace) -> int:
    import torch

    torch.manual_seed(args.seed)
    source = open_source(args.data, image_size=args.image_size)
    backbone = _backbone(args)
    backbone.require_layers([args.layer])
    run = open_run_from_args(args, "embed")
    t0 = time.perf_counter()
    path = extract_features(
        backbone,
        source,
        run.path,
        layer=args.layer,
        normalize=args.normalize,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        device=args.device,
        num_workers=args.workers,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - t0
    run.write_metrics({"samples": len(source), "seconds": elapsed, "samples_per_s": len(source) / max(elapsed, 1e-9)})
    print(f"embeddings: {path} ({len(source)} samples)")
    return 0


# ---------------------------------------------------------------- probe
def cmd_probe(args: argparse.Namespace) -> int:
    if args.train_emb and args.test_emb:
        tr, te = load_embeddings(args.train_emb), load_embeddings(args.test_emb)
        domain_names = te.meta.get("domain_names")
        class_names = te.meta.get("classes")
        if tr.meta.get("classes") and class_names and list(tr.meta["classes"]) != list(class_names):
            raise ValueError(f"--train-emb {args.train_emb} and --test-emb {args.test_emb} name different classes "
                             f"({len(tr.meta['classes'])} vs {len(class_names)}): embed splits of one dataset")
        run = open_run_from_args(args, "probe")
    elif args.model and args.data and args.test_data:
        backbone = _backbone(args)
        sources = {split: open_source(spec, image_size=args.image_size)
                   for split, spec in (("train", args.data), ("test", args.test_data))}
        run = open_run_from_args(args, "probe")
        embs = {split: load_embeddings(extract_features(backbone, src, run / f"embeddings-{split}",
                                                        normalize=args.normalize, device=args.device,
                                                        progress=not args.quiet))
                for split, src in sources.items()}
        tr, te = embs["train"], embs["test"]
        domain_names, class_names = list(sources["test"].domain_names), list(sources["test"].classes)
    else:
        raise ConfigError("give --train-emb and --test-emb, or --model, --data and --test-data")
    metrics = evaluate_representations(
        tr.features,
        tr.labels,
        te.features,
        te.labels,
        test_domains=te.domains,
        domain_names=domain_names,
        class_names=class_names,
        weight_decay=args.weight_decay,
        knn_k=args.k,
        device=args.device,
    )
    run.write_metrics(metrics)
    print(f"linear top-1 {metrics['linear']['top1']:.2f}%  kNN top-1 {metrics['knn']['top1']:.2f}%")
    for dom, acc in metrics["linear"]["per_domain"].items():
        print(f"  {dom:<16} linear {acc:6.2f}%  kNN {metrics['knn']['per_domain'][dom]:6.2f}%")
    print(f"run folder: {run.path}")
    return 0


# ---------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    if args.preset and args.config:
        raise ConfigError("give either --preset or --config, not both")
    preset = args.preset
    if preset is None and args.config is None and args.data.startswith("world:"):
        preset = "world"  # the embedded world's tuned defaults (presets/world.yaml)
    cfg = load_config(TrainConfig, preset_path(preset) if preset else args.config, args.overrides)
    flags = {
        k: getattr(args, k)
        for k in ("method", "backbone", "epochs", "batch_size", "lr", "image_size")
        if getattr(args, k) is not None
    }
    plugins = list(cfg.plugins)
    plugin_sets = []
    for name in list_plugins():
        enabled = getattr(args, f"plugin_{name}", False)
        for flag, (kwarg, _, _) in plugin_class(name).cli_options.items():
            value = getattr(args, f"plugin_{name}_{flag.replace('-', '_')}", None)
            if value is not None:
                enabled = True
                plugin_sets.append(f"plugin_args.{name}.{kwarg}={value}")
        if enabled:
            plugins.append(name)
    if args.init_from:
        flags["init_from"] = args.init_from
    seed = [f"seed={args.seed}"] if args.seed_given else []  # else the config's (--config, --set seed=S)
    cfg = apply_overrides(cfg, [f"{k}={v}" for k, v in flags.items()] + seed + plugin_sets)
    cfg = apply_overrides(cfg, [f"plugins=[{', '.join(dict.fromkeys(plugins))}]"])
    eval_spec = args.eval_data
    if eval_spec is None and args.data.startswith("world:") and "split=" not in args.data:
        eval_spec = args.data + ("&" if "?" in args.data else "?") + "split=test"
    source = open_source(args.data, image_size=cfg.image_size)
    eval_source = open_source(eval_spec, image_size=cfg.image_size) if eval_spec and not args.no_eval else None
    run = open_run_from_args(args, "train", {"data": args.data, "eval_data": eval_spec, **asdict(cfg)})
    # the same inputs in the same folder: continue (or reuse) that run instead of replacing it
    result = train_encoder(cfg, source, run.path, eval_data=eval_source, resume=args.resume or run.reused,
                           progress=not args.quiet)
    run.write_metrics(result.metrics())
    print(f"trained {cfg.method} for {result.steps} steps, final loss {result.final_loss:.4f}, "
          f"{result.images_per_s:.0f} images/s")
    if result.trained is not None and result.random_init is not None:
        t, r = result.trained, result.random_init
        print(f"linear probe top-1 on {eval_spec}: {t['linear']['top1']:.2f}% "
              f"(random init {r['linear']['top1']:.2f}%), kNN {t['knn']['top1']:.2f}% "
              f"(random init {r['knn']['top1']:.2f}%)")
    print(f"run folder: {run.path}")
    return 0


# ---------------------------------------------------------------- audit
def cmd_audit(args: argparse.Namespace) -> int:
    cfg = load_config(AuditConfig, args.config, args.overrides + ([f"seed={args.seed}"] if args.seed_given else []))
    given = {"world_dir": args.world, "model": args.model, "weights": args.weights, "data": args.data,
             "test_data": args.test_data, "image_size": args.image_size, "device": args.device, "vl": args.vl}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None}, pretrained=cfg.pretrained or args.pretrained)
    if args.no_falcon:
        cfg = replace(cfg, falcon=False)
    run = open_run_from_args(args, "audit", asdict(cfg))
    summary = run_audit(cfg, run, progress=not args.quiet)
    print((run / "summary.md").read_text())
    print(f"report: {run / 'index.html'}")
    top1 = summary["overview"]["linear_top1"]
    return 0 if top1 == top1 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="replens", description="Understand vision encoders and fix their failures.")
    parser.add_argument("--version", action="version", version=f"replens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--offline", action="store_true",
                        help="never download: use cached weights, models and datasets only (= REPLENS_OFFLINE=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_list, _add_world, _add_embed, _add_probe, _add_train, _add_audit):
        add(sub)
    _add_app_commands(sub)
    return parser


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="print registered backbones, data sources and methods")
    p.add_argument("--pretrained", action="store_true",
                   help="what can be downloaded (weights, VL models, datasets, caption banks) and what is cached")
    _common(p)
    p.set_defaults(handler=cmd_list)


def _add_world(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "world",
        help="generate the embedded scene world",
        description="Generate the embedded multi-domain scene world into a cached folder.",
    )
    p.add_argument("--n", type=positive_int, default=20000, help="number of scenes (default 20000)")
    p.add_argument("--size", type=positive_int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--domains", default="photo,cartoon,sketch,painting", help="comma-separated render domains")
    p.add_argument("--spurious", type=float, default=0.0,
                   help="share of train images whose spurious cue is tied to the class (random at test; default 0)")
    p.add_argument("--cue", choices=SPURIOUS_CUES, default="marker",
                   help="what carries the spurious cue: the corner patch's colour (marker, default), the background "
                        "colour, or the corner patch's black-and-white pattern (pattern: survives colour-jitter views)")
    p.add_argument(
        "--preview",
        nargs="?",
        const="auto",
        default=None,
        metavar="PNG",
        help="also save a preview grid, one row per domain (default: OUT/preview.png)",
    )
    _common(p, "dataset folder (default: runs/world-n<N>-s<SIZE>-seed<SEED>)")
    p.set_defaults(handler=cmd_world)


def _model_opts(p: argparse.ArgumentParser) -> None:
    """The options of ``embed`` and ``probe`` that pick and load an encoder."""
    p.add_argument("--model", help="backbone name (replens list)")
    p.add_argument("--weights", default=None, help="weights file (safetensors or torch state dict)")
    p.add_argument("--pretrained", action="store_true", help="use the library's cached pretrained weights")
    p.add_argument("--image-size", type=positive_int, default=None, help="resize + center-crop images to this side")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--normalize", action="store_true", help="L2-normalise each representation")


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="stream representations of a dataset to disk")
    _model_opts(p)
    p.add_argument("--data", required=True, help="data spec, e.g. world:DIR or wds:PATH/test-0.tar.gz")
    p.add_argument("--layer", default=None, help="named layer to read (default: the representation)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--chunk-size", type=positive_int, default=4096,
                   help="samples per chunk file (a rerun after a crash resumes at the first missing chunk)")
    p.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader workers")
    _common(p, "embeddings folder (resumes when interrupted)")
    p.set_defaults(handler=cmd_embed)


def _add_probe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="linear probe and kNN accuracy, per domain")
    _model_opts(p)
    p.add_argument("--train-emb", type=Path, help="embeddings folder of the training split")
    p.add_argument("--test-emb", type=Path, help="embeddings folder of the test split")
    p.add_argument("--data", help="training data spec (with --model)")
    p.add_argument("--test-data", help="test data spec (with --model)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="linear probe L2 penalty")
    p.add_argument("--k", type=positive_int, default=20, help="kNN neighbours")
    _common(p)
    p.set_defaults(handler=cmd_probe)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a self-supervised encoder")
    p.add_argument("--data", required=True, help="data spec")
    p.add_argument("--method", default=None, help="SSL method (default simclr)")
    p.add_argument("--backbone", default=None, help="backbone (default small_cnn)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--image-size", type=positive_int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--preset", default=None, help="packaged config preset: world (the default for world: data), cifar10, imagenet"
    )
    p.add_argument("--eval-data", default=None,
                   help="labelled data for the kNN monitor and the final linear probe "
                        "(default for world:DIR data: its test split)")
    p.add_argument("--no-eval", action="store_true", help="skip the kNN monitor and final probe")
    p.add_argument(
        "--from",
        dest="init_from",
        default=None,
        metavar="CHECKPOINT",
        help="start from these backbone weights (backbone.safetensors or a training checkpoint)",
    )
    _plugin_opts(p)
    _config_opts(p)
    _common(p)
    p.set_defaults(handler=cmd_train)


def _plugin_opts(p: argparse.ArgumentParser) -> None:
    """One switch per registered SSL plug-in (``--ddm``, ...) and one option per entry of its ``cli_options``."""
    for name, help_text in list_plugins().items():
        p.add_argument(
            f"--{name.replace('_', '-')}",
            dest=f"plugin_{name}",
            action="store_true",
            help=f"plug-in: {help_text} (arguments: --set plugin_args.{name}.KEY=VALUE)",
        )
        for flag, (_, typ, flag_help) in plugin_class(name).cli_options.items():
            p.add_argument(
                f"--{flag}",
                dest=f"plugin_{name}_{flag.replace('-', '_')}",
                metavar=flag.rsplit("-", 1)[-1].upper(),
                type=typ,
                default=None,
                help=f"{flag_help} (enables --{name.replace('_', '-')})",
            )


def _add_audit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="train, diagnose and explain an encoder; one offline HTML report",
        description="With no arguments: build the embedded world, train VICReg on it (the world preset; "
        "--set train.plugins=[ddm,fda] adds the DDM and FDA plug-ins), probe per domain against a random-init encoder, score every test sample with Q-Score, explain feature groups and "
        "failures with FALCON, and write index.html + summary.json + PNG figures. With --model and --data: "
        "the diagnose-and-explain half on a given encoder. Rerun with the same --out to resume.",
    )
    p.add_argument("--world", default=None, help="use this world folder instead of building one")
    p.add_argument("--model", default=None, help="audit this backbone (replens list) instead of training one")
    p.add_argument("--weights", default=None, help="weights file of --model")
    p.add_argument("--pretrained", action="store_true", help="the library's cached pretrained weights of --model")
    p.add_argument("--data", default=None, help="probe-training data spec for --model (world: uses its train split)")
    p.add_argument("--test-data", default=None, help="evaluation data spec (default: the test split of --data)")
    p.add_argument("--image-size", type=positive_int, default=None, help="image side for --model (default 32)")
    p.add_argument("--device", default=None, help="device for embedding, probing and explaining (default cpu)")
    p.add_argument("--vl", default=None,
                   help="VL model for FALCON: an open_clip NAME:TAG (e.g. ViT-B-32:openai), hf-hub:ORG/REPO or a "
                        "checkpoint (default: the embedded tiny CLIP); hub weights download on first use")
    p.add_argument("--no-falcon", action="store_true", help="skip the FALCON explanations")
    _config_opts(p)
    _common(p)
    p.set_defaults(handler=cmd_audit)


def _add_app_commands(sub: argparse._SubParsersAction) -> None:
    """The commands of ``replens.apps.commands``: each module's ``add_parser(sub)``, in module-name order."""
    for info in sorted(pkgutil.iter_modules(replens.apps.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"replens.apps.commands.{info.name}").add_parser(sub)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (exit code 2), like every other user error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean a bad input, reported in one line with exit code 2."""
    import pickle

    import yaml

    return (ConfigError, DataError, DownloadError, OSError, KeyError, ValueError, WeightsError, EmbeddingsError,
            WorldCacheError, yaml.YAMLError, pickle.UnpicklingError)


def error_line(exc: BaseException) -> str:
    """One line describing a user error (a KeyError's quoted key unwrapped, line breaks folded)."""
    msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        msg = f"{exc.filename}: {exc.strerror}"
    msg = " ".join(msg.split())
    if not any(ch.isalpha() for ch in msg):  # e.g. a bare number from a native library
        msg = f"{type(exc).__name__}{': ' + msg if msg else ''}"
    return msg


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``replens`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    A user error (bad value, missing or unreadable file, a run folder holding
    another run, ...) prints one line ``replens COMMAND: error: ...`` on
    stderr and returns 2; the run folders the command opened are closed
    (a failed resume puts back what it found). ``-v`` shows the traceback.
    """
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    args.seed_given = getattr(args, "seed", None) is not None
    if hasattr(args, "seed") and args.seed is None:
        args.seed = 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.offline:
        os.environ["REPLENS_OFFLINE"] = "1"  # read by replens.hub, also in the audit's child processes
    mark, ok = open_run_count(), False
    try:
        code = int(args.handler(args))
        ok = code == 0
        return code
    except _user_errors() as exc:
        if args.verbose:
            raise
        print(f"replens {args.command}: error: {error_line(exc)}", file=sys.stderr)
        return 2
    finally:
        close_runs(mark, ok=ok)


if __name__ == "__main__":
    sys.exit(main())
