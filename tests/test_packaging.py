"""models/ and guides/ install as ppvae.models / ppvae.guides, never as top-level names, and every source file
(each part file of every part folder) is in the wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"ppvae": "ppvae", "models": "ppvae/models", "guides": "ppvae/guides", "experiments": "ppvae/experiments"}


def test_wheel_maps_models_and_guides_under_ppvae_and_holds_every_source_file(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("ppvae-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"ppvae", next(t for t in tops if t.endswith(".dist-info"))}, tops
    sources = [p for folder in MAPPED for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".toml")
               and "results" not in p.relative_to(ROOT).parts]
    for path in sources:
        relative = path.relative_to(ROOT)
        installed = "/".join([MAPPED[relative.parts[0]], *relative.parts[1:]])
        assert installed in names, f"{relative} is not in the wheel: list its package in pyproject.toml"


def test_no_generic_top_level_modules_installed():
    import importlib.util

    import ppvae.guides
    import ppvae.models

    assert ppvae.models.VAEModel and ppvae.guides.VAEGuide
    for generic in ("models", "guides", "experiments"):
        spec = importlib.util.find_spec(generic)
        found = [] if spec is None else list(spec.submodule_search_locations or [spec.origin])
        # inside the checkout (the source folders, or the tests' own folders on the test path) is not installed
        assert all(ROOT in Path(place).resolve().parents for place in found), (generic, found)
