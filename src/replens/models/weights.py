"""Checkpoint I/O: safe weight loading and atomic checkpoint writing.

Weights are read either from safetensors files or from torch files loaded with
``torch.load(..., weights_only=True)``; arbitrary pickled objects are refused.
Common wrappers are unwrapped: a ``state_dict`` / ``model`` / ``module`` nesting
(e.g. ``{"best_prec1": ..., "state_dict": {...}}``) and a ``module.`` key prefix
(``nn.DataParallel``) or ``_orig_mod.`` prefix (``torch.compile``).

Pretrained hub weights (torchvision, timm, open_clip) are read from their
libraries' caches and downloaded on first use by :mod:`replens.hub` (one
download policy for everything, ``REPLENS_OFFLINE=1`` turns it off).
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from replens.hub import offline_mode
from replens.runs import atomic_write

__all__ = [
    "LoadResult",
    "WeightsError",
    "load_weights",
    "offline_mode",
    "read_checkpoint",
    "read_state_dict",
    "save_checkpoint",
]

_WRAPPER_KEYS = ("state_dict", "model", "module")
_KEY_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 20


class WeightsError(RuntimeError):
    """Weights could not be found, read or matched to a model."""


@dataclass(frozen=True)
class LoadResult:
    """What :func:`load_weights` did.

    Attributes:
        missing: Model keys absent from the file (only possible with ``strict=False``).
        unexpected: File keys the model does not have (ignored with ``strict=False``).
    """

    missing: list[str]
    unexpected: list[str]


def _list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = f" ... (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return shown + more


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len < path.stat().st_size


def _load_file(path: Path) -> tuple[Any, dict[str, Any]]:
    """Read a checkpoint file into (raw object, meta) without unpickling code."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if _is_safetensors(path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path), device="cpu")
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception as exc:  # safetensors raises its own error types
            reason = " ".join(str(exc).split())
            if not any(ch.isalpha() for ch in reason):  # e.g. a text file: the header length is garbage
                reason = f"not a safetensors file (invalid header: {type(exc).__name__} {reason})"
            raise WeightsError(f"cannot read safetensors file {path}: {reason}") from None
        meta: dict[str, Any] = {}
        if "replens_meta" in metadata:
            meta = json.loads(metadata["replens_meta"])
        return tensors, meta
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found is None:
            detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.DOTALL)
            reason = detail.group(1).strip() if detail else type(exc).__name__
            raise WeightsError(f"cannot read torch file {path}: {reason}") from None
        raise WeightsError(
            f"refusing to unpickle {path}: it holds a pickled {found.group(1)} object, and "
            "replens only loads tensors and plain containers (torch.load with "
            "weights_only=True). Re-save it as a state dict (torch.save(model.state_dict(), "
            "path)) or with replens.models.save_checkpoint."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"cannot read torch file {path}: {exc}") from None
    meta = obj.get("meta", {}) if isinstance(obj, Mapping) else {}
    return obj, meta if isinstance(meta, dict) else {}


def checkpoint_backbone_args(path: str | Path) -> dict[str, Any]:
    """The architecture options a safetensors checkpoint records (``backbone_args`` in its header), else ``{}``.

    ``replens train`` writes them beside the backbone name when the run set any (e.g. SmallCNN
    ``widths``), so :func:`~replens.models.create_backbone` can rebuild a non-default architecture from
    the file alone. Only the header is read; torch files and files without the key give ``{}``.

    Raises:
        WeightsError: The header's ``backbone_args`` is not a JSON object (the message names the file).
    """
    path = Path(path)
    if not path.is_file() or not _is_safetensors(path):
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception:  # unreadable: load_weights reports it with its own message
        return {}
    text = metadata.get("backbone_args")
    if text is None:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: header key backbone_args is not JSON ({exc.msg})") from None
    if not isinstance(args, dict):
        raise WeightsError(f"{path}: header key backbone_args must be a JSON object, got {type(args).__name__}")
    return args


def read_raw(path: str | Path) -> Any:
    """The object a safetensors or torch file holds, read without unpickling code (``weights_only=True``).

    Raises:
        WeightsError: Missing or unreadable file, or a pickled object other than tensors and plain
            containers (the message names the refused global).
    """
    return _load_file(Path(path))[0]


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Descend into state_dict/model/module nestings and strip wrapper prefixes."""
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            raise WeightsError(
                f"{path} is not a state dict: entries {_list([str(k) for k in bad])} are not "
                f"tensors and there is no nested {'/'.join(_WRAPPER_KEYS)} dict to unwrap"
            )
        obj = inner
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict")
    state = {str(k): v for k, v in obj.items()}
    for prefix in _KEY_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a state dict and its metadata from a safetensors or torch file.

    Args:
        path: The file. Torch files are read with ``weights_only=True``.

    Returns:
        ``(state, meta)``: the unwrapped state dict (``module.`` prefix removed)
        and the metadata saved by :func:`save_checkpoint` (empty if none).

    Raises:
        WeightsError: Missing file, unreadable file, arbitrary pickled objects,
            or content that is not a state dict.
    """
    path = Path(path)
    obj, meta = _load_file(path)
    return _unwrap(obj, path), meta


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Like :func:`read_checkpoint` but returns the state dict only."""
    return read_checkpoint(path)[0]


def load_weights(module: nn.Module, path: str | Path, *, strict: bool = True) -> LoadResult:
    """Load a weights file into ``module`` and report any key mismatch by name.

    A :class:`~replens.models.backbone.Backbone` may rename keys first through its
    ``adapt_state_dict`` hook (e.g. a timm wrapper adds its ``model.`` prefix).
    ``num_batches_tracked`` buffers absent from old checkpoints are not counted
    as missing.

    Args:
        module: The model to fill.
        path: A safetensors or torch file (see :func:`read_checkpoint`).
        strict: Raise on missing or unexpected keys. Shape mismatches always raise.

    Returns:
        The keys that were missing or unexpected (both empty when strict).

    Raises:
        WeightsError: Unreadable file, missing/unexpected keys (strict) or a
            shape mismatch, each naming the offending keys.
    """
    path = Path(path)
    state = read_state_dict(path)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"weights {path} hold NaN or infinite values in {_list(bad)}")
    adapt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = getattr(
        module, "adapt_state_dict", None
    )
    if adapt is not None:
        state = adapt(state)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if shapes:
        problems.append(f"shape mismatch for {_list(shapes)}")
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {_list(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_list(unexpected)}")
    if problems:
        raise WeightsError(f"weights {path} do not match {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return LoadResult(missing=missing, unexpected=unexpected)


def save_checkpoint(
    path: str | Path,
    module_or_state: nn.Module | Mapping[str, torch.Tensor],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write weights atomically (temp file in the same folder, then ``os.replace``).

    ``.safetensors`` paths get a safetensors file with ``meta`` stored as JSON in
    its header (key ``replens_meta``); any other suffix gets a torch file
    ``{"state_dict": ..., "meta": ...}`` that loads with ``weights_only=True``.

    Args:
        path: Destination file.
        module_or_state: A module (its ``state_dict()`` is saved) or a state dict.
        meta: JSON-serialisable metadata (e.g. model name, epoch).

    Returns:
        The written path.
    """
    path = Path(path)
    raw = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    # clone: safetensors refuses tensors that share storage; also detaches from devices
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in raw.items()}
    meta_dict = dict(meta or {})
    json.dumps(meta_dict)  # fail early on non-serialisable metadata
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        header = {"replens_meta": json.dumps(meta_dict)}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=header))
    else:
        atomic_write(path, lambda tmp: torch.save({"state_dict": state, "meta": meta_dict}, tmp))
    return path
