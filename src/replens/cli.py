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
import pkgutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from replens import __version__
from replens.commands import add_common_options, add_config_options, args_as_config, run_dir_from_args
from replens.config import ConfigError, apply_overrides, load_config, preset_path
from replens.runs import RunDir, default_run_dir

log = logging.getLogger("replens")

Handler = Callable[[argparse.Namespace], int]


_common = add_common_options
_config_opts = add_config_options


def _run_dir(args: argparse.Namespace, command: str) -> RunDir:
    return run_dir_from_args(args, command)


# ---------------------------------------------------------------- list
def cmd_list(args: argparse.Namespace) -> int:
    from replens.data.sources import list_sources
    from replens.models import list_backbones
    from replens.ssl import list_methods, list_plugins

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
    from replens.world import WorldConfig, generate_world, save_preview

    cfg = WorldConfig(n=args.n, size=args.size, domains=args.domains.split(","), seed=args.seed, spurious=args.spurious)
    out = args.out if args.out is not None else Path("runs") / f"world-n{args.n}-s{args.size}-seed{args.seed}"
    t0 = time.perf_counter()
    path = Path(generate_world(cfg, out, progress=not args.quiet))
    elapsed = time.perf_counter() - t0
    run = RunDir(path)
    run.write_config({"command": "world", **asdict(cfg)})
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
    from replens.models import create_backbone

    return create_backbone(args.model, weights=args.weights, pretrained=args.pretrained).eval()


def cmd_embed(args: argparse.Namespace) -> int:
    import torch

    from replens.data import open_source
    from replens.models import extract_features

    torch.manual_seed(args.seed)
    out = args.out if args.out is not None else default_run_dir("embed")
    run = RunDir(out)
    run.write_config({"command": "embed", **args_as_config(args)})
    source = open_source(args.data, image_size=args.image_size)
    backbone = _backbone(args)
    t0 = time.perf_counter()
    path = extract_features(
        backbone,
        source,
        out,
        layer=args.layer,
        normalize=args.normalize,
        batch_size=args.batch_size,
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
    from replens.data import open_source
    from replens.evaluate import evaluate_representations
    from replens.models import extract_features, load_embeddings

    run = _run_dir(args, "probe")
    run.write_config({"command": "probe", **args_as_config(args)})
    if args.train_emb and args.test_emb:
        tr, te = load_embeddings(args.train_emb), load_embeddings(args.test_emb)
        domain_names = te.meta.get("domain_names")
        class_names = te.meta.get("classes")
    elif args.model and args.data and args.test_data:
        backbone = _backbone(args)
        embs = {}
        for split, spec in (("train", args.data), ("test", args.test_data)):
            src = open_source(spec, image_size=args.image_size)
            embs[split] = load_embeddings(
                extract_features(
                    backbone,
                    src,
                    run / f"embeddings-{split}",
                    normalize=args.normalize,
                    device=args.device,
                    progress=not args.quiet,
                )
            )
        tr, te = embs["train"], embs["test"]
        domain_names, class_names = list(src.domain_names), list(src.classes)
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
    import torch

    from replens.data import open_source
    from replens.engine import TrainConfig, train
    from replens.engine.evaluation import probe_backbone
    from replens.models import create_backbone
    from replens.ssl import list_plugins, plugin_class

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
    cfg = apply_overrides(cfg, [f"{k}={v}" for k, v in flags.items()] + [f"seed={args.seed}"] + plugin_sets)
    cfg = apply_overrides(cfg, [f"plugins=[{', '.join(dict.fromkeys(plugins))}]"])
    run = _run_dir(args, "train")
    eval_spec = args.eval_data
    if eval_spec is None and args.data.startswith("world:") and "split=" not in args.data:
        eval_spec = args.data + ("&" if "?" in args.data else "?") + "split=test"
    run.write_config({"command": "train", "data": args.data, "eval_data": eval_spec, **asdict(cfg)})
    source = open_source(args.data, image_size=cfg.image_size)
    eval_source = open_source(eval_spec, image_size=cfg.image_size) if eval_spec and not args.no_eval else None
    summary = train(cfg, source, run.path, resume=args.resume, progress=not args.quiet,
                    monitor=(source, eval_source) if eval_source is not None else None)
    backbone = summary.pop("backbone")
    metrics: dict[str, Any] = {"training": summary}
    if eval_source is not None and summary["finished"]:
        metrics["trained"] = probe_backbone(backbone.eval(), source, eval_source, run / "eval" / "trained",
                                            progress=not args.quiet)
        torch.manual_seed(cfg.seed)
        random_init = create_backbone(cfg.backbone, **cfg.backbone_args).eval()
        metrics["random_init"] = probe_backbone(random_init, source, eval_source, run / "eval" / "random_init",
                                                progress=not args.quiet)
    run.write_metrics(metrics)
    print(f"trained {cfg.method} for {summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
          f"{summary['images_per_s']:.0f} images/s")
    if "trained" in metrics:
        t, r = metrics["trained"], metrics["random_init"]
        print(f"linear probe top-1 on {eval_spec}: {t['linear']['top1']:.2f}% "
              f"(random init {r['linear']['top1']:.2f}%), kNN {t['knn']['top1']:.2f}% "
              f"(random init {r['knn']['top1']:.2f}%)")
    print(f"run folder: {run.path}")
    return 0


# ---------------------------------------------------------------- audit
def cmd_audit(args: argparse.Namespace) -> int:
    from replens.engine.audit import AuditConfig, run_audit

    cfg = load_config(AuditConfig, args.config, args.overrides + [f"seed={args.seed}"])
    given = {"world_dir": args.world, "model": args.model, "weights": args.weights, "data": args.data,
             "test_data": args.test_data, "image_size": args.image_size, "device": args.device}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None}, pretrained=cfg.pretrained or args.pretrained)
    if args.no_falcon:
        cfg = replace(cfg, falcon=False)
    run = _run_dir(args, "audit")
    run.write_config({"command": "audit", **asdict(cfg)})
    summary = run_audit(cfg, run, progress=not args.quiet)
    print((run / "summary.md").read_text())
    print(f"report: {run / 'index.html'}")
    top1 = summary["overview"]["linear_top1"]
    return 0 if top1 == top1 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replens", description="Understand vision encoders and fix their failures.")
    parser.add_argument("--version", action="version", version=f"replens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="print registered backbones, data sources and methods")
    _common(p)
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser(
        "world",
        help="generate the embedded scene world",
        description="Generate the embedded multi-domain scene world into a cached folder.",
    )
    p.add_argument("--n", type=int, default=20000, help="number of scenes (default 20000)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--domains", default="photo,cartoon,sketch,painting", help="comma-separated render domains")
    p.add_argument("--spurious", type=float, default=0.0, help="spurious background-class correlation in train")
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

    def model_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", help="backbone name (replens list)")
        p.add_argument("--weights", default=None, help="weights file (safetensors or torch state dict)")
        p.add_argument("--pretrained", action="store_true", help="use the library's cached pretrained weights")
        p.add_argument("--image-size", type=int, default=None, help="resize + center-crop images to this side")
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
        p.add_argument("--normalize", action="store_true", help="L2-normalise each representation")

    p = sub.add_parser("embed", help="stream representations of a dataset to disk")
    model_opts(p)
    p.add_argument("--data", required=True, help="data spec, e.g. world:DIR or wds:PATH/test-0.tar.gz")
    p.add_argument("--layer", default=None, help="named layer to read (default: the representation)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    _common(p, "embeddings folder (resumes when interrupted)")
    p.set_defaults(handler=cmd_embed)

    p = sub.add_parser("probe", help="linear probe and kNN accuracy, per domain")
    model_opts(p)
    p.add_argument("--train-emb", type=Path, help="embeddings folder of the training split")
    p.add_argument("--test-emb", type=Path, help="embeddings folder of the test split")
    p.add_argument("--data", help="training data spec (with --model)")
    p.add_argument("--test-data", help="test data spec (with --model)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="linear probe L2 penalty")
    p.add_argument("--k", type=int, default=20, help="kNN neighbours")
    _common(p)
    p.set_defaults(handler=cmd_probe)

    p = sub.add_parser("train", help="train a self-supervised encoder")
    p.add_argument("--data", required=True, help="data spec")
    p.add_argument("--method", default=None, help="SSL method (default simclr)")
    p.add_argument("--backbone", default=None, help="backbone (default small_cnn)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--image-size", type=int, default=None)
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
    from replens.ssl import list_plugins, plugin_class

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
    _config_opts(p)
    _common(p)
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser(
        "audit",
        help="train, diagnose and explain an encoder; one offline HTML report",
        description="With no arguments: build the embedded world, train SimCLR + DDM + FDA, probe per domain "
        "against a random-init encoder, score every test sample with Q-Score, explain feature groups and "
        "failures with FALCON, and write index.html + summary.json + PNG figures. With --model and --data: "
        "the diagnose-and-explain half on a given encoder. Rerun with the same --out to resume.",
    )
    p.add_argument("--world", default=None, help="use this world folder instead of building one")
    p.add_argument("--model", default=None, help="audit this backbone (replens list) instead of training one")
    p.add_argument("--weights", default=None, help="weights file of --model")
    p.add_argument("--pretrained", action="store_true", help="the library's cached pretrained weights of --model")
    p.add_argument("--data", default=None, help="probe-training data spec for --model (world: uses its train split)")
    p.add_argument("--test-data", default=None, help="evaluation data spec (default: the test split of --data)")
    p.add_argument("--image-size", type=int, default=None, help="image side for --model (default 32)")
    p.add_argument("--device", default=None, help="device for embedding, probing and explaining (default cpu)")
    p.add_argument("--no-falcon", action="store_true", help="skip the FALCON explanations")
    _config_opts(p)
    _common(p)
    p.set_defaults(handler=cmd_audit)

    import replens.commands

    for info in sorted(pkgutil.iter_modules(replens.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"replens.commands.{info.name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``replens`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from replens.data.base import DataError

    user_errors: tuple[type[BaseException], ...] = (ConfigError, DataError, FileNotFoundError, KeyError, ValueError)
    from replens.models import EmbeddingsError, WeightsError

    user_errors += (WeightsError, EmbeddingsError)
    try:
        return int(args.handler(args))
    except user_errors as exc:
        if args.verbose:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"replens {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
