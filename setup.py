"""Build step beside pyproject.toml (which holds all metadata): which packages go into the wheel.

Every package under hartkit/, plus the top-level conf/ folder (Hydra's config tree) shipped as the package
data ``hartkit.conf``: an installed hartkit finds its configs through ``pkg://hartkit.conf`` while the
checkout keeps one conf/ at the top (hartkit/configs.py). Each config group folder becomes a data package,
so a new group is shipped without touching this file.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CONF = ROOT / "conf"
CONF_PACKAGE = "hartkit.conf"

conf_packages = [CONF_PACKAGE] + sorted(
    f"{CONF_PACKAGE}." + ".".join(d.relative_to(CONF).parts)
    for d in CONF.rglob("*")
    if d.is_dir() and not any(part.startswith((".", "__")) for part in d.relative_to(CONF).parts)
)

CONF_INIT = '"""hartkit\'s Hydra config tree (conf/ of the source repository), read through pkg://hartkit.conf."""\n'


class BuildPyWithConfPackage(build_py):
    """Hydra's pkg:// config source only accepts a regular package: give hartkit/conf an __init__.py in the
    build (the checkout's conf/ stays a plain folder of YAML files)."""

    def _conf_init(self) -> Path:
        return Path(self.build_lib, *CONF_PACKAGE.split("."), "__init__.py")

    def run(self) -> None:
        super().run()
        init = self._conf_init()
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text(CONF_INIT)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(self._conf_init())]


setup(
    cmdclass={"build_py": BuildPyWithConfPackage},
    packages=find_namespace_packages(include=["hartkit", "hartkit.*"], exclude=["*.__pycache__"]) + conf_packages,
    package_dir={CONF_PACKAGE: "conf"},
    package_data={
        "hartkit": ["**/*.safetensors", "**/*.json", "**/*.sha256", "**/*.yaml"],
        **{name: ["*.yaml"] for name in conf_packages},
    },
)
