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


def test_the_fake_tokenizer_lives_outside_ar_models():
    assert not (PACKAGE / "ar_models" / "fake_tokenizer.py").exists()
    names = {n for path in sources("ar_models") for _, _, ns in hartkit_imports(path) for n in ns}
    assert "FakeMultiScaleTokenizer" not in names


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
