"""The registry's catalog: parts described without importing them are the parts their modules register, and
a described part's module is imported when the part is used."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ppvae import registry

DUMP = """
import json, sys
import ppvae.config
from ppvae import registry
loaded = sorted({e.module for kind in registry._ENTRIES.values() for e in kind.values() if e.loaded is not None})
rows = [registry._entry_to_json(e) for kind in registry._ENTRIES.values() for e in kind.values()]
print(json.dumps({"torch": "torch" in sys.modules, "loaded": loaded, "rows": rows}))
"""


def dump(tmp_path, env):
    done = subprocess.run([sys.executable, "-c", DUMP], capture_output=True, text=True, cwd=tmp_path, env=env,
                          check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """What a process knows of the parts on a cold cache (imported) and then on the catalog it wrote."""
    tmp = tmp_path_factory.mktemp("catalog")
    env = os.environ | {"PPVAE_CACHE": str(tmp / "cache")}
    return dump(tmp, env), dump(tmp, env), tmp / "cache" / registry.CATALOG


def test_described_parts_equal_the_imported_ones(both):
    cold, warm, path = both
    assert path.is_file() and cold["torch"] and not warm["torch"]
    assert cold["loaded"] and not warm["loaded"]  # described, not one part module imported
    assert warm["rows"] == cold["rows"]  # names, order, parameters, defaults, checks, traits, docs
    kinds = {row["kind"] for row in warm["rows"]}
    assert kinds == set(registry.KINDS)


def test_a_described_part_imports_its_module_when_used(both, monkeypatch):
    _, warm, _ = both
    (row,) = [r for r in warm["rows"] if (r["kind"], r["name"]) == ("prior", "student_t")]
    stub = registry._entry_from_json(row)
    monkeypatch.setitem(registry._ENTRIES["prior"], "student_t", stub)
    from ppvae.models.priors.student_t import StudentT

    assert stub.factory is StudentT  # the real entry replaced the stub on import; its factory is the class
    assert registry.entry("prior", "student_t").loaded is StudentT


def test_a_stale_or_damaged_catalog_is_rebuilt(tmp_path):
    env = os.environ | {"PPVAE_CACHE": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / registry.CATALOG).write_text("{not json")
    fresh = dump(tmp_path, env)
    assert fresh["torch"] and json.loads((tmp_path / "cache" / registry.CATALOG).read_text())["parts"]
    cached = json.loads((tmp_path / "cache" / registry.CATALOG).read_text())
    cached["fingerprint"] = "an older checkout"
    (tmp_path / "cache" / registry.CATALOG).write_text(json.dumps(cached))
    assert dump(tmp_path, env)["torch"]  # not trusted: imported again
    assert not dump(tmp_path, env)["torch"]  # and rewritten
