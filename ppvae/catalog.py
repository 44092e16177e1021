"""What ``ppvae list`` and ``ppvae list --keys`` print, from the registry's descriptions of the parts
(:func:`ppvae.registry.describe`), so that they answer without importing torch."""

from __future__ import annotations


def lines(keys: bool = False) -> list[str]:
    """The lines of ``ppvae list`` (``keys``: of ``ppvae list --keys``)."""
    return _keys() if keys else _parts()


def _parts() -> list[str]:
    from ppvae import config, registry

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


__all__ = ["lines"]
