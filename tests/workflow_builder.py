"""Build and check UI-format ComfyUI workflows (the format of example_workflows/ and saved graphs).

Node specs come from our INPUT_TYPES and from tests/data/comfy_core_nodes.json, recorded from a real
ComfyUI's /object_info. Widget inputs are the INT/FLOAT/STRING/BOOLEAN and combo inputs; a seed-like
input with control_after_generate carries one extra widget value ("fixed") in widgets_values.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = os.path.join(HERE, "data", "comfy_core_nodes.json")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def core_nodes() -> dict:
    with open(CORE) as handle:
        return json.load(handle)["nodes"]


def our_specs() -> dict:
    from latent_lab.nodes import NODE_CLASS_MAPPINGS
    specs = {}
    for key, cls in NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        specs[key] = {
            "input": {s: {k: list(v) for k, v in inputs.get(s, {}).items()} for s in ("required", "optional")},
            "input_order": {s: list(inputs.get(s, {})) for s in ("required", "optional")},
            "output": list(cls.RETURN_TYPES), "output_name": list(cls.RETURN_NAMES),
        }
    return specs


def all_specs() -> dict:
    return {**core_nodes(), **our_specs()}


def is_widget(spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES or spec[0] == "COMBO"


def ordered_inputs(spec: dict) -> list:
    """[(name, spec)] in ComfyUI's input order, required first."""
    out = []
    for section in ("required", "optional"):
        names = spec.get("input_order", {}).get(section) or list(spec["input"].get(section, {}))
        out += [(n, spec["input"][section][n]) for n in names]
    return out


def widget_value_slots(spec: dict) -> list:
    """[(input name, spec or None)]: one slot per widget value; None marks control_after_generate."""
    slots = []
    for name, input_spec in ordered_inputs(spec):
        if is_widget(input_spec):
            slots.append((name, input_spec))
            options = input_spec[1] if len(input_spec) > 1 else {}
            if options.get("control_after_generate") or (input_spec[0] == "INT" and name in ("seed", "noise_seed")):
                slots.append((name, None))
    return slots


class Workflow:
    def __init__(self, specs: dict | None = None):
        self.specs = specs or all_specs()
        self.nodes, self.links = [], []

    def add(self, node_type: str, widgets: dict | None = None, pos=(0, 0), size=(320, 200), title=None) -> dict:
        spec = self.specs[node_type]
        widgets = widgets or {}
        values = []
        for name, slot_spec in widget_value_slots(spec):
            if slot_spec is None:
                values.append("fixed")
                continue
            options = slot_spec[1] if len(slot_spec) > 1 else {}
            default = options.get("default", slot_spec[0][0] if isinstance(slot_spec[0], list) and slot_spec[0] else None)
            values.append(widgets.get(name, default))
        unknown = set(widgets) - {n for n, _ in widget_value_slots(spec)}
        assert not unknown, f"{node_type} has no widgets {unknown}"
        node = {
            "id": len(self.nodes) + 1, "type": node_type, "pos": list(pos), "size": list(size), "flags": {},
            "order": len(self.nodes), "mode": 0,
            "inputs": [{"name": n, "type": s[0] if isinstance(s[0], str) else "COMBO", "link": None}
                       for n, s in ordered_inputs(spec) if not is_widget(s)],
            "outputs": [{"name": name, "type": kind, "links": [], "slot_index": i}
                        for i, (kind, name) in enumerate(zip(spec["output"], spec["output_name"]))],
            "properties": {"Node name for S&R": node_type},
            "widgets_values": values,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def connect(self, source: dict, output: int | str, target: dict, input_name: str) -> None:
        if isinstance(output, str):
            output = [o["name"] for o in source["outputs"]].index(output)
        slot = [i["name"] for i in target["inputs"]].index(input_name)
        link_id = len(self.links) + 1
        kind = source["outputs"][output]["type"]
        self.links.append([link_id, source["id"], output, target["id"], slot, kind])
        source["outputs"][output]["links"].append(link_id)
        target["inputs"][slot]["link"] = link_id

    def to_json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
                "version": 0.4}


def check_widget_value(spec: list, value) -> str | None:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 else {}
    if isinstance(kind, list):
        return None if value in kind or not kind else f"{value!r} not in {kind[:8]}"
    if kind == "INT" and not (isinstance(value, int) and not isinstance(value, bool)):
        return f"{value!r} is not an INT"
    if kind == "FLOAT" and not isinstance(value, (int, float)):
        return f"{value!r} is not a FLOAT"
    if kind == "STRING" and not isinstance(value, str):
        return f"{value!r} is not a STRING"
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{value!r} is not a BOOLEAN"
    if kind in ("INT", "FLOAT"):
        if "min" in options and value < options["min"] or "max" in options and value > options["max"]:
            return f"{value!r} outside [{options.get('min')}, {options.get('max')}]"
    return None


def problems(workflow: dict, specs: dict, model_combos_ok: bool = True) -> list[str]:
    """Everything wrong with a UI-format workflow: unknown types, widget values, links."""
    found = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        spec = specs.get(node["type"])
        if spec is None:
            found.append(f"node {node['id']}: unknown type {node['type']}")
            continue
        slots = widget_value_slots(spec)
        values = node.get("widgets_values", [])
        if len(values) != len(slots):
            found.append(f"node {node['id']} {node['type']}: {len(values)} widget values, expected {len(slots)}")
            continue
        for (name, slot_spec), value in zip(slots, values):
            if slot_spec is None:
                if value not in ("fixed", "increment", "decrement", "randomize"):
                    found.append(f"node {node['id']}.{name}: control value {value!r}")
                continue
            combo_of_files = isinstance(slot_spec[0], list) and model_combos_ok and any(
                str(v).endswith((".safetensors", ".ckpt", ".png", ".jpg")) for v in [value])
            error = None if combo_of_files else check_widget_value(slot_spec, value)
            if error:
                found.append(f"node {node['id']} {node['type']}.{name}: {error}")
    for link in workflow["links"]:
        link_id, src, src_slot, dst, dst_slot, kind = link
        if src not in nodes or dst not in nodes:
            found.append(f"link {link_id}: missing node")
            continue
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        if link_id not in (out.get("links") or []) or inp.get("link") != link_id:
            found.append(f"link {link_id}: not recorded on both ends")
        if out["type"] != kind or (inp["type"] not in (kind, "*") and kind != "*"):
            found.append(f"link {link_id}: type {kind} joins {out['type']} -> {inp['type']}")
        spec = specs.get(nodes[dst]["type"])
        if spec and inp["name"] not in dict(ordered_inputs(spec)):
            found.append(f"link {link_id}: {nodes[dst]['type']} has no input {inp['name']}")
    for node in workflow["nodes"]:
        spec = specs.get(node["type"])
        if not spec:
            continue
        for section_name, section in (("required", spec["input"].get("required", {})),):
            for name, input_spec in section.items():
                if not is_widget(input_spec):
                    linked = [i for i in node["inputs"] if i["name"] == name and i.get("link") is not None]
                    if not linked:
                        found.append(f"node {node['id']} {node['type']}: required input {name} is not connected")
    return found
