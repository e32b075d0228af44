"""Stage `tokenizer`: train (or load) the configured tokenizer and hand it to later stages.

Order of precedence:
1. ``tokenizer.checkpoint`` set: load pretrained weights (VAR / HART / hartkit), no training;
2. a finished artifact with the same config hash exists and ``retrain=false``: reuse it;
3. otherwise train (``resume=true`` continues from the artifact's last checkpoint).

The tokenizer ends up in ``ctx.state["tokenizer"]`` (eval mode), its folder in
``ctx.state["tokenizer_dir"]``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hartkit.data import ImageTensorDataset, build_dataset, collate
from hartkit.engine import mark_unfinished
from hartkit.engine.rng import reseed
from hartkit.pipeline import StageError, artifact_dir, compose_run_config
from hartkit.tokenizers import build_tokenizer, is_finished_artifact, load_tokenizer, save_tokenizer
from hartkit.tokenizers.checkpoint import load_state_dict_checked
from hartkit.tokenizers.pretrained import (
    from_hart_layout,
    load_pretrained_tokenizer,
    read_state_dict,
    uses_pretrained,
)
from hartkit.tokenizers.trainer import train_tokenizer
from hartkit.utils.env import git_commit

log = logging.getLogger(__name__)


def run(ctx) -> None:
    cfg = ctx.cfg
    tok_cfg = cfg.tokenizer
    if uses_pretrained(tok_cfg):
        model = load_pretrained_tokenizer(tok_cfg, ctx.device)
        model.check_image_size(cfg.data.resolution)
        ctx.state["tokenizer"] = model
        ctx.state["tokenizer_dir"] = None
        log.info("tokenizer %s: %s weights from %s (%.1f M parameters), no training", tok_cfg.name,
                 tok_cfg.checkpoint_format, tok_cfg.checkpoint, model.num_parameters() / 1e6)
        return

    art = ctx.artifact_dir("tokenizer")
    if is_finished_artifact(art) and not cfg.retrain:
        model = load_tokenizer(art, ctx.device)
        ctx.state["tokenizer"] = model
        ctx.state["tokenizer_dir"] = art
        log.info("tokenizer %s: reusing the finished artifact %s (retrain=true trains again)", tok_cfg.name, art)
        return

    reseed(cfg.seed, "tokenizer", "init")  # initial weights from the seed alone (see the generator)
    model = build_tokenizer(tok_cfg)
    model.check_image_size(cfg.data.resolution)  # fail before building data or training
    if tok_cfg.init_from:
        init_from(model, resolve_init_from(cfg))
        if tok_cfg.freeze_quantizer_path:
            model.freeze_quantizer_path()

    train_set = ImageTensorDataset(build_dataset(cfg.data, "train"))
    mark_unfinished(art)  # retraining: the old weights no longer count as finished

    log.info("tokenizer %s (%s): %.2f M parameters, %d tokens per image, training %d steps -> %s",
             tok_cfg.name, model.kind, model.num_parameters() / 1e6, model.num_tokens, tok_cfg.train.steps, art)
    commit = git_commit()  # the code this process runs (read now: the checkout may change while it trains)
    result = train_tokenizer(model, train_set, tok_cfg, art, ctx.device, seed=cfg.seed, resume=cfg.resume,
                             collate_fn=collate, logger=ctx.logger)
    if result.grid_path is not None:
        ctx.logger.log_image("tokenizer/reconstructions", str(result.grid_path),
                             caption="rows: " + ", ".join(_row_names(model.kind)), step=result.step)
        log.info("reconstruction grid: %s", result.grid_path)
    # records scored later name the commit their artifact was trained at, not only where they were scored
    save_tokenizer(result.model, tok_cfg, art, {**result.summary, "git_commit": commit})
    ctx.state["tokenizer"] = result.model
    ctx.state["tokenizer_dir"] = art
    log.info("tokenizer %s: finished %d steps -> %s", tok_cfg.name, result.step, art)


def _row_names(kind: str) -> list[str]:
    return ["original", "discrete", "hybrid"] if kind == "hybrid" else ["original", kind]


# quantizer settings that belong to a tokenizer row, not to the shared sizes (the recipe sets its own)
_ROW_QUANTIZER_KEYS = ("phi_on_last_scale", "dead_code_reinit")


def resolve_init_from(cfg) -> str:
    """``tokenizer.init_from`` as a path: a path stays; a tokenizer preset name (``discrete``) means the finished
    artifact of ``tokenizer=<name>`` trained with this run's data, seed, sizes and training settings, i.e. the
    row ``python run.py -m tokenizer=<name>,<this row> <same overrides>`` trains first (HART's recipe starts
    from the trained discrete tokenizer). The preset keeps its own kind, name and row settings
    (``quantizer.phi_on_last_scale``, ``quantizer.dead_code_reinit``); autoencoder, quantizer sizes and
    ``train`` come from this run."""
    source = str(cfg.tokenizer.init_from)
    if Path(source).expanduser().exists() or "/" in source or source.endswith((".pth", ".pt", ".safetensors")):
        return source
    try:
        base = compose_run_config([f"tokenizer={source}"])
    except Exception as exc:  # Hydra's composition errors have many types; the message says what is missing
        raise StageError(f"tokenizer.init_from={source!r} is neither an existing path nor a tokenizer preset "
                         f"(conf/tokenizer/<name>.yaml): {exc}") from exc
    base.data, base.seed, base.paths = cfg.data, cfg.seed, cfg.paths
    base.tokenizer.autoencoder, base.tokenizer.train = cfg.tokenizer.autoencoder, cfg.tokenizer.train
    own = {k: base.tokenizer.quantizer[k] for k in _ROW_QUANTIZER_KEYS}
    base.tokenizer.quantizer = cfg.tokenizer.quantizer
    for key, value in own.items():
        base.tokenizer.quantizer[key] = value
    art = artifact_dir(base, "tokenizer")
    if not is_finished_artifact(art):
        raise StageError(
            f"tokenizer.init_from={source}: the {source} tokenizer for this data and seed is not trained yet "
            f"(expected at {art}). Train it first: python run.py tokenizer={source} stages=[tokenizer] "
            "with the same data/seed overrides, or run both in one sweep: "
            f"python run.py -m tokenizer={source},{cfg.tokenizer.name}")
    log.info("tokenizer.init_from=%s -> %s", source, art)
    return str(art)


def init_from(model, source: str) -> None:
    """Start from a trained tokenizer: a hartkit artifact folder, or a VAR/HART/hartkit checkpoint file."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "config.yaml").is_file():
        state = load_tokenizer(path).state_dict()
    elif path.is_file():
        state = read_state_dict(path)
        if any(k.startswith("vae.") for k in state):
            state = from_hart_layout(state)
    else:
        raise FileNotFoundError(f"tokenizer.init_from={source} is neither a tokenizer artifact folder nor a file")
    load_state_dict_checked(model, state, source=f"tokenizer.init_from={source}")
    log.info("initialised the tokenizer from %s", source)
