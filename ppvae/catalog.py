"""What ``ppvae list`` and ``ppvae list --keys`` print, cached so that they answer without torch.

Listing the parts means importing every part file, and with them torch and Pyro (seconds, and
more under load). The text is kept in ``$PPVAE_CACHE/catalog.json`` under the registry's fingerprint
of the size and modification time of every source file of the package, so any change (a new part
file included) rebuilds it on the next call, and otherwise it is read back in milliseconds.
"""

from __future__ import annotations

import json

from ppvae import registry
from ppvae.errors import WriteError
from ppvae.paths import cache_root

FILE = "catalog.json"


def lines(keys: bool = False) -> list[str]:
    """The lines of ``ppvae list`` (``keys``: of ``ppvae list --keys``), from the cache when it is current."""
    path, current = cache_root() / FILE, registry.fingerprint()
    try:
        cached = json.loads(path.read_text())
        if cached["fingerprint"] == current:
            return cached["keys" if keys else "parts"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: rebuild it
    built = {"fingerprint": current, "parts": _parts(), "keys": _keys()}
    from ppvae import runs

    try:
        runs.make_dir(path.parent)
        runs.write_json(path, built)
    except WriteError:
        pass  # a read-only cache only costs the next call the rebuild
    return built["keys" if keys else "parts"]


def _parts() -> list[str]:
    from ppvae import config

    out = ["experiments (ppvae run NAME):"]
    for name, path in sorted(config.bundled_experiments().items()):
        raw = path.read_text().splitlines()
        desc = next((line.split("=", 1)[1].strip().strip('"') for line in raw if line.startswith("description")), "")
        out.append(f"  {name:<26} {desc}")
    for kind in registry.KINDS.values():
        entries = registry.entries(kind.name)
        common = set.intersection(*({f.name for f in e.fields} for e in entries)) if len(entries) > 1 else set()
        out.append(f"{kind.doc} ({kind.where})" + (f"; every one takes {', '.join(sorted(common))}" if common else "")
                   + ":")
        for e in entries:
            params = ", ".join(f.name for f in e.fields if f.name not in common)
            out.append(f"  {e.name:<26} {e.doc}" + (f" [{params}]" if params else ""))
    out.append("config keys, defaults and the parameters of every part: ppvae list --keys")
    return out


def _keys() -> list[str]:
    from ppvae import config

    return [f"{key:<34} {default:<14} {doc}" for key, default, doc in config.keys()]


__all__ = ["lines", "FILE"]
