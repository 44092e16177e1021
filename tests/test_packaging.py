"""models/ and guides/ install as ppvae.models / ppvae.guides, never as top-level names."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_models_and_guides_under_ppvae(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True)
    (wheel,) = tmp_path.glob("ppvae-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops <= {"ppvae", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for required in ["ppvae/models/vae.py", "ppvae/guides/vae.py", "ppvae/experiments/quickstart.toml", "ppvae/cli.py"]:
        assert required in names, required


def test_no_generic_top_level_modules_installed():
    import importlib.util

    import ppvae.guides
    import ppvae.models

    assert ppvae.models.VAEModel and ppvae.guides.VAEGuide
    for generic in ("models", "guides", "experiments"):
        spec = importlib.util.find_spec(generic)
        assert spec is None or Path(spec.origin or "").resolve().parent.parent == ROOT, generic
