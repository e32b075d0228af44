"""The architecture as written in docs/design.md: who may import whom, the tokenizer protocol, in-repo citations.

Imports are read from the source with ``ast`` (module-level and function-level alike), so a rule cannot be
dodged by moving an import into a function.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hartkit.tokenizers import build_tokenizer
from hartkit.tokenizers.fake import FakeMultiScaleTokenizer
from hartkit.tokenizers.protocol import ScaleTokenizer, Tokens, teacher_forcing_input

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hartkit"
KINDS = ("discrete", "continuous", "hybrid")

# the hartkit packages each library package may import (docs/design.md, "Dependency rules"); "" = hartkit itself
ALLOWED = {
    "kernels": set(),
    "utils": {"errors"},
    "engine": {"errors", "utils"},
    "data": {"errors", "utils"},
    "tokenizers": {"errors", "utils", "engine", "kernels"},
    "ar_models": {"errors", "utils", "engine", "kernels", "tokenizers", "configs"},
    "eval": {"errors", "utils", "data", "records"},
}
# what ar_models may take from hartkit.tokenizers: the protocol module, and the Tokens value
PROTOCOL_MODULE = "hartkit.tokenizers.protocol"
TOKENS_MODULES = ("hartkit.tokenizers", "hartkit.tokenizers.tokens")


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def hartkit_imports(path: Path, root: Path = REPO) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, imported module, names) of every hartkit import in a file, at any depth, sorted by line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path, root).split(".")
    if path.name != "__init__.py":
        here = here[:-1]  # the package a relative import starts from
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against this module's package
                module = ".".join(here[: len(here) - node.level + 1] + ([module] if module else []))
            if module == "hartkit" or module.startswith("hartkit."):
                found.append((node.lineno, module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "hartkit" or alias.name.startswith("hartkit."):
                    found.append((node.lineno, alias.name, ()))
    return sorted(found)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def sources(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "hartkit" / "ar_models"
    pkg.mkdir(parents=True)
    probe = pkg / "probe.py"
    probe.write_text("def f():\n    from hartkit.tokenizers.checkpoint import build_tokenizer\n"
                     "from ..tokenizers import tokens\nimport hartkit.eval.frechet\nimport torch\n")
    assert hartkit_imports(probe, tmp_path) == [(2, "hartkit.tokenizers.checkpoint", ("build_tokenizer",)),
                                                (3, "hartkit.tokenizers", ("tokens",)),
                                                (4, "hartkit.eval.frechet", ())]


def test_ar_models_use_only_the_tokenizer_protocol_and_tokens():
    breaches = []
    for path in sources("ar_models"):
        for line, module, names in hartkit_imports(path):
            if package_of(module) != "tokenizers" or module == PROTOCOL_MODULE:
                continue
            if module in TOKENS_MODULES and names and set(names) <= {"Tokens"}:
                continue
            breaches.append(f"{path.relative_to(REPO)}:{line} imports {module} {list(names)}")
    assert not breaches, ("ar_models may import from hartkit.tokenizers only the protocol module and Tokens "
                          "(docs/design.md, 'The tokenizer protocol'):\n" + "\n".join(breaches))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_library_packages_import_only_what_the_design_allows(package):
    breaches = []
    for path in sources(package):
        for line, module, _ in hartkit_imports(path):
            target = package_of(module)
            if target != package and target not in ALLOWED[package]:
                breaches.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not breaches, (f"hartkit.{package} may import only {sorted(ALLOWED[package]) or 'nothing of hartkit'} "
                          "(docs/design.md, 'Dependency rules'):\n" + "\n".join(breaches))


# packages whose modules are library code: a command line (argparse, ``__main__``) lives in hartkit/tools/ instead
LIBRARY_PACKAGES = (*sorted(ALLOWED), "scaleout")


def command_line_parts(path: Path) -> list[str]:
    """What makes a module a command: an ``if __name__ == "__main__"`` block, or a module-level ``main``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            found.append(f"{node.lineno}: if __name__ == '__main__'")
        elif isinstance(node, ast.FunctionDef) and node.name == "main":
            found.append(f"{node.lineno}: def main")
    return found


def test_the_command_reader_sees_a_main(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("class A:\n    def main(self):\n        pass\n\n\ndef main():\n    pass\n\n\n"
                     "if __name__ == '__main__':\n    main()\n")
    assert command_line_parts(probe) == ["6: def main", "10: if __name__ == '__main__'"]


@pytest.mark.parametrize("package", LIBRARY_PACKAGES)
def test_command_line_tools_live_in_hartkit_tools(package):
    breaches = [f"{path.relative_to(REPO)}:{part}" for path in sources(package) for part in command_line_parts(path)]
    assert not breaches, ("a benchmark or maintenance command goes to hartkit/tools/<name>.py (with a console entry "
                          "point in pyproject.toml); the library keeps the functions it calls:\n" + "\n".join(breaches))


# Hydra's composition API: only hartkit.configs calls it (one helper: compose / compose_many / compose_for_run)
HYDRA_COMPOSITION = {"compose", "initialize", "initialize_config_dir", "initialize_config_module", "GlobalHydra"}


def hydra_composition_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "hydra":
            found += [f"{node.lineno}: {node.module}.{a.name}" for a in node.names if a.name in HYDRA_COMPOSITION]
    return found


def test_only_hartkit_configs_composes_hydra_configs():
    allowed = {PACKAGE / "configs.py"}
    breaches = [f"{path.relative_to(REPO)}:{hit}" for path in sorted(PACKAGE.rglob("*.py")) if path not in allowed
                for hit in hydra_composition_imports(path)]
    assert not breaches, ("compose hartkit's configs through hartkit.configs (compose, compose_many, "
                          "compose_for_run):\n" + "\n".join(breaches))
    assert hydra_composition_imports(PACKAGE / "configs.py")  # the reader does see the helper's own imports


GRID_WRITER = PACKAGE / "utils" / "grids.py"


def test_one_image_grid_writer():
    """Image grids (training previews, recon_eval, gen_eval, preview) are drawn by hartkit/utils/grids.py only."""
    breaches = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == GRID_WRITER:
            continue
        text = path.read_text(encoding="utf-8")
        for needle in (".imshow(", "make_grid(", "save_image("):
            if needle in text:
                breaches.append(f"{path.relative_to(REPO)}: {needle}")
    assert ".imshow(" in GRID_WRITER.read_text(encoding="utf-8")
    assert not breaches, "draw image grids with hartkit.utils.grids:\n" + "\n".join(breaches)


def test_the_fake_tokenizer_lives_outside_ar_models():
    assert not (PACKAGE / "ar_models" / "fake_tokenizer.py").exists()
    names = {n for path in sources("ar_models") for _, _, ns in hartkit_imports(path) for n in ns}
    assert "FakeMultiScaleTokenizer" not in names


def stage_modules() -> dict[str, Path]:
    """The modules that hold a pipeline stage (``hartkit.pipeline.STAGES``), by module name."""
    from hartkit.pipeline import STAGES

    names = {target.split(":")[0] for target in STAGES.values()}
    return {name: REPO.joinpath(*name.split(".")).with_suffix(".py") for name in names}


def imported_modules(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, module) for every hartkit module a file imports; ``from a import b`` counts as ``a`` and ``a.b``."""
    out = []
    for line, module, names in hartkit_imports(path, root):
        out += [(line, module)] + [(line, f"{module}.{name}") for name in names]
    return out


def test_the_stage_reader_sees_a_stage_imported_as_a_name(tmp_path):
    stages = tmp_path / "hartkit" / "stages"
    stages.mkdir(parents=True)
    probe = stages / "probe.py"
    probe.write_text("from hartkit.stages import generator as g\nfrom . import artifacts\n")
    found = [module for _, module in imported_modules(probe, tmp_path)]
    assert "hartkit.stages.generator" in found and "hartkit.stages.artifacts" in found


def test_no_stage_imports_another_stage():
    """Stages hand over through the resolver (hartkit.stages.artifacts), never by importing each other."""
    stages = stage_modules()
    assert set(stages) >= {"hartkit.stages.generator", "hartkit.stages.gen_eval", "hartkit.stages.recon_eval"}
    breaches = [f"{name}:{line} imports {module}"
                for name, path in sorted(stages.items()) for line, module in imported_modules(path)
                if module in stages and module != name]
    assert not breaches, "a stage takes models from hartkit.stages.artifacts, not from another stage:\n" + \
        "\n".join(breaches)


def test_stages_orchestrate_and_leave_formatting_to_the_packages():
    """Result tables are written by hartkit.eval.tables; a stage module defines no ``format_*`` function."""
    breaches = [f"{name}:{node.lineno} def {node.name}" for name, path in sorted(stage_modules().items())
                for node in ast.parse(path.read_text(encoding="utf-8")).body
                if isinstance(node, ast.FunctionDef) and node.name.startswith("format_")]
    assert not breaches, "move table formatting to hartkit/eval/tables.py:\n" + "\n".join(breaches)


def state_keys(path: Path) -> list[tuple[int, str]]:
    """(line, key) of every ``<x>.state["key"]`` and ``<x>.state.get("key")`` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "state"
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            found.append((node.lineno, node.slice.value))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "state" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def test_the_state_reader_sees_writes_and_reads(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("ctx.state['a'] = 1\nx = ctx.state.get('b')\nctx.state['c'], y = 2, 3\nz = other['d']\n")
    assert sorted(state_keys(probe)) == [(1, "a"), (2, "b"), (3, "c")]


def test_stages_hand_over_only_declared_keys():
    """Every key a stage (or the resolver) puts in or takes from ``ctx.state`` is declared on
    ``hartkit.pipeline.StageState``, with its type."""
    from hartkit.pipeline import StageState

    declared = set(StageState.__annotations__)
    used = {(path, line, key) for path in sources("stages") for line, key in state_keys(path)}
    assert {key for _, _, key in used} >= {"tokenizer", "tokenizer_dir", "generator", "generator_dir"}
    undeclared = [f"{path.relative_to(REPO)}:{line} ctx.state[{key!r}]" for path, line, key in sorted(used)
                  if key not in declared]
    assert not undeclared, "declare the hand-over on hartkit.pipeline.StageState:\n" + "\n".join(undeclared)


def test_the_resolver_and_stage_helpers_import_no_stage():
    stages = stage_modules()
    helpers = [p for p in sources("stages") if module_name(p) not in stages]
    assert PACKAGE / "stages" / "artifacts.py" in helpers
    breaches = [f"{path.relative_to(REPO)}:{line} imports {module}"
                for path in helpers for line, module in imported_modules(path) if module in stages]
    assert not breaches, "the stages' helper modules sit below the stages:\n" + "\n".join(breaches)


# ------------------------------------------------------------------------------------------ citations

CITABLE_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".sh", ".ipynb"}
SKIPPED_DIRS = {".git", ".venv", "venv", "outputs", "artifacts", "multirun", "wandb", "__pycache__", ".pytest_cache",
                ".ruff_cache", "build", "dist", "hartkit.egg-info", "node_modules"}
OUTSIDE_NOTES = ("DESIGN" + ".md", "REFERENCE" + ".md")  # notes that exist only outside the repository


def repo_text_files() -> list[Path]:
    out = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if any(part in SKIPPED_DIRS for part in rel.parts[:-1]) or not path.is_file():
            continue
        if path.suffix in CITABLE_SUFFIXES or path.name in ("Makefile",):
            out.append(path)
    return out


def test_nothing_cites_notes_outside_the_repository():
    hits = []
    for path in repo_text_files():
        for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(note in line for note in OUTSIDE_NOTES):
                hits.append(f"{path.relative_to(REPO)}:{i}: {line.strip()[:100]}")
    assert not hits, "cite docs/design.md or docs/reference.md instead:\n" + "\n".join(hits)


def _headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip().replace("`", "") for line in doc.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")]


def test_cited_doc_sections_exist():
    """A citation of reference.md's section N needs a heading ``N. ...``; one of a quoted design.md title needs
    a heading with that title."""
    reference = _headings(REPO / "docs" / "reference.md")
    design = _headings(REPO / "docs" / "design.md")
    numbers = {h.split(".", 1)[0] for h in reference if re.match(r"\d+\.", h)}
    cite_ref = re.compile(r"docs/reference\.md\)?,?\s+section\s+(\d+)")
    cite_design = re.compile(r"docs/design\.md\)?,?\s+\"([^\"]+)\"")
    missing, seen = [], 0
    for path in repo_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number in cite_ref.findall(text):
            seen += 1
            if number not in numbers:
                missing.append(f"{path.relative_to(REPO)}: reference.md section {number}")
        for title in cite_design.findall(text):
            seen += 1
            if title not in design:
                missing.append(f"{path.relative_to(REPO)}: design.md \"{title}\"")
    assert seen >= 10  # the code does cite the docs
    assert not missing, "citations of sections that do not exist:\n" + "\n".join(missing)


# ------------------------------------------------------------------------------------------ the protocol

TINY = {
    "autoencoder": {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "dec_res_blocks": 1, "attn_levels": [-1],
                    "mid_attn": True, "z_channels": 4, "norm_groups": 4},
    "quantizer": {"vocab_size": 16, "patch_nums": [1, 2, 4, 8]},
}


def real_tokenizer(kind: str):
    torch.manual_seed(0)
    model = build_tokenizer(OmegaConf.create({"name": kind, "kind": kind, **TINY})).eval()
    if kind != "continuous":
        model.quantize.embedding.weight.data.normal_(0, 0.5)
    return model


def tokenizers():
    for kind in KINDS:
        yield f"MultiScaleTokenizer-{kind}", real_tokenizer(kind)
        yield f"FakeMultiScaleTokenizer-{kind}", FakeMultiScaleTokenizer(kind, (1, 2, 4, 8), 16, 4, downsample=2)


PROTOCOL_METHODS = [name for name, value in vars(ScaleTokenizer).items()
                    if callable(value) and not name.startswith("_")]


def test_protocol_names_the_generator_interface():
    members = set(PROTOCOL_METHODS) | set(ScaleTokenizer.__annotations__) | {"phi_on_last_scale"}
    assert members >= {"kind", "patch_nums", "vocab_size", "latent_channels", "phi_on_last_scale", "encode",
                       "decode", "decode_latent", "empty_f_hat", "add_scale", "next_scale_input", "code_embedding"}


@pytest.mark.parametrize("label,tok", list(tokenizers()), ids=lambda v: v if isinstance(v, str) else "")
def test_tokenizers_satisfy_the_protocol(label, tok):
    assert isinstance(tok, ScaleTokenizer), label
    for name in PROTOCOL_METHODS:  # every protocol call binds on the implementation
        wanted = inspect.signature(getattr(ScaleTokenizer, name))
        have = inspect.signature(getattr(tok, name))
        args = [p.name for p in wanted.parameters.values() if p.name != "self" and p.default is p.empty]
        have.bind(*args)  # positional use, as the generators call them
    assert tok.kind in KINDS and isinstance(tok.phi_on_last_scale, bool)
    assert (tok.vocab_size == 0) == (tok.kind == "continuous")

    B, C, pns = 2, tok.latent_channels, tok.patch_nums
    img = torch.rand(B, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        tokens = tok.encode(img)
        assert isinstance(tokens, Tokens) and tokens.kind == tok.kind
        x_in = teacher_forcing_input(tok, tokens)
        assert x_in.shape == (B, sum(p * p for p in pns[1:]), C)
        # the function is the walk a sampler takes: add_scale then next_scale_input, scale by scale
        values = tokens.scales if tok.kind == "continuous" else tokens.indices
        f_hat, steps = tok.empty_f_hat(B), []
        assert f_hat.shape == (B, C, pns[-1], pns[-1]) and not f_hat.any()
        for k in range(len(pns) - 1):
            f_hat = tok.add_scale(f_hat, k, values[k])
            steps.append(tok.next_scale_input(f_hat, k))
        torch.testing.assert_close(x_in, torch.cat(steps, 1))
        f_hat = tok.add_scale(f_hat, len(pns) - 1, values[-1])
        without = tokens if tokens.residual is None else Tokens(tok.kind, tokens.patch_nums, indices=tokens.indices)
        torch.testing.assert_close(tok.decode(without), tok.decode_latent(f_hat), atol=1e-5, rtol=1e-5)
        if tok.kind != "continuous":
            idx = torch.tensor([[0, tok.vocab_size - 1]])
            assert tok.code_embedding(idx).shape == (1, 2, C)


def test_teacher_forcing_refuses_tokens_of_another_kind():
    tok = FakeMultiScaleTokenizer("discrete", (1, 2, 4), 8, 4, downsample=4)
    tokens = FakeMultiScaleTokenizer("continuous", (1, 2, 4), 8, 4, downsample=4).encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="continuous tokens"):
        teacher_forcing_input(tok, tokens)


def test_an_object_without_the_walk_is_not_a_scale_tokenizer():
    class EncodeOnly:
        kind, patch_nums, vocab_size, latent_channels, phi_on_last_scale = "discrete", (1, 2), 4, 2, False

        def encode(self, img):
            raise NotImplementedError

    assert not isinstance(EncodeOnly(), ScaleTokenizer)
