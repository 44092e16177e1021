"""Reading configs written by ppvae 0.1, whose part parameters were flat keys of their section.

ppvae 0.1 wrote ``model.prior = "beta"`` beside ``model.prior_a = 0.2``, every parameter of every
part in every config (``config.json`` of each run folder held them all). Today a part's
parameters live in its table, ``model.prior = {name = "beta", a = 0.2}``. :func:`upgrade` maps
the old keys onto the new places -- into the chosen part where it takes them, dropped where it
does not (they had no effect there either) -- and returns one notice line, so old run folders,
bundled experiments copied from 0.1 and old command lines keep working.
"""

from __future__ import annotations

from typing import Any

from ppvae import registry

# old flat key of a section -> (the section's part key, the parameter name in that part)
FLAT = {
    "model": {
        "sigma": ("likelihood", "sigma"), "sigma_floor": ("likelihood", "sigma_floor"),
        "stage_one_tol": ("likelihood", "stage_one_tol"), "stage_one_max_epochs": ("likelihood", "stage_one_max_epochs"),
        "prior_a": ("prior", "a"), "prior_b": ("prior", "b"), "prior_scale": ("prior", "scale"),
        "prior_components": ("prior", "components"),
        "weight_prior": ("weights", "prior"), "weight_prior_scale": ("weights", "prior_scale"),
        "weight_prior_narrow": ("weights", "prior_narrow"), "weight_prior_mix": ("weights", "prior_mix"),
        "weight_init": ("weights", "init"), "weight_init_scale": ("weights", "init_scale"),
        "local_reparam": ("weights", "local_reparam"),
    },
    "guide": {
        "rank": ("family", "rank"), "flow_layers": ("family", "layers"), "flow_hidden": ("family", "hidden"),
        "flow_context": ("family", "context"),
    },
}
KINDS = {"likelihood": "likelihood", "prior": "prior", "weights": "weights", "family": "family"}
DEFAULT_PARTS = {"likelihood": "bernoulli", "prior": "normal", "weights": "point", "family": "normal"}  # 0.1's defaults
NETWORKS = (("model", "decoder"), ("model", "top"), ("guide", "encoder"))
# old [eval] keys: analysis -> {old key: parameter}
ANALYSIS_KEYS = {
    "gradient_study": {"gradient_ks": "ks", "gradient_repeats": "repeats", "gradient_batch": "batch"},
    "sample_quality": {"aggregate_components": "components"},
    "theory": {"gmm_components": "components"},
}
# section-tables whose 0.1 files held the parameters of every part; those of other parts are dropped
OLD_ONLY_PARAMS = {"estimator": ("num_particles", "k", "alpha", "gradient", "strict"), "data": ("path", "scale")}
KIND_OF_SECTION = {"estimator": "estimator", "data": "dataset"}
DEFAULT_NAME = {"estimator": "trace", "data": "digits"}


def upgrade(raw: dict) -> tuple[dict, list[str]]:
    """``raw`` with ppvae 0.1's flat keys moved into their parts' tables, and a notice (empty if none were found)."""
    moved: list[str] = []
    dropped: list[str] = []  # parameters of parts the config did not choose: they had no effect
    for section, flat in FLAT.items():
        node = raw.get(section)
        if isinstance(node, dict):
            for old, (part, param) in flat.items():
                if old in node:
                    kept = _into_part(node, part, param, node.pop(old))
                    (moved if kept else dropped).append(f"{section}.{old}" + f" -> {section}.{part}.{param}" * kept)
    for section, key in NETWORKS:
        net = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(net, dict) and "kind" in net:
            net["name"] = net.pop("kind")
            moved.append(f"{section}.{key}.kind -> {section}.{key}.name")
    ev = raw.get("eval")
    if isinstance(ev, dict):
        moved += _upgrade_eval(ev)
    if moved or dropped:  # an old config: it also wrote the keys of parts it did not choose
        for section, params in OLD_ONLY_PARAMS.items():
            node = raw.get(section)
            if isinstance(node, dict):
                entry = _entry(KIND_OF_SECTION[section], node.get("name", DEFAULT_NAME[section]))
                for p in params:
                    if p in node and entry is not None and entry.field(p) is None:
                        del node[p]
                        dropped.append(f"{section}.{p}")
    if not moved and not dropped:
        return raw, []
    shown = ", ".join(moved[:3]) + (", ..." if len(moved) > 3 else "")
    return raw, [f"This config uses ppvae 0.1's flat keys: {len(moved)} read as part parameters ({shown or 'none'}), "
                 f"{len(dropped)} dropped that the chosen parts do not take; write the new keys to silence this "
                 "notice (ppvae list --keys shows them)."]


def _entry(kind: str, name: Any) -> registry.Entry | None:
    return registry.find(kind, name) if isinstance(name, str) else None


def _into_part(section: dict, part: str, param: str, value: Any) -> bool:
    """Put ``param = value`` into the section's part table if the chosen part takes it (True); else drop it."""
    chosen = section.get(part, DEFAULT_PARTS[part])
    table = {"name": chosen} if isinstance(chosen, str) else chosen
    if not isinstance(table, dict):
        return False
    entry = _entry(KINDS[part], table.get("name", DEFAULT_PARTS[part]))
    if entry is None or entry.field(param) is None:
        return False
    section[part] = table | {param: value}
    return True


def _upgrade_eval(ev: dict) -> list[str]:
    moved = []
    if isinstance(ev.get("extra_k"), list):
        ks = ev.pop("extra_k")
        if ks:
            ev["extra_k"] = {"ks": ks}
        moved.append("eval.extra_k = [...] -> [eval.extra_k] ks")
    quality = ev.get("sample_quality")
    if isinstance(quality, int) and not isinstance(quality, bool):
        ev.pop("sample_quality")
        if quality:
            ev["sample_quality"] = {"n": quality}
        moved.append("eval.sample_quality = N -> [eval.sample_quality] n")
    for analysis, params in ANALYSIS_KEYS.items():
        for old, param in params.items():
            if old not in ev:
                continue
            value = ev.pop(old)
            moved.append(f"eval.{old} -> eval.{analysis}.{param}")
            enabled = ev.get(analysis)
            if enabled is True:
                ev[analysis] = enabled = {}
            if isinstance(enabled, dict):
                enabled[param] = value
    return moved


__all__ = ["upgrade"]
