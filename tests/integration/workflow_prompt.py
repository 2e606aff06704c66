"""A UI-format workflow (example_workflows/, a saved graph) turned into the API prompt ComfyUI's frontend queues.

Follows the frontend's graphToPrompt (ComfyUI_frontend 1.27: src/utils/executionUtil.ts, litegraph's
ExecutableNodeDTO, extensions/core/dynamicPrompts.ts):
- widget values are positional over the node's widgets, which are its widget inputs in /object_info order; a
  seed's control_after_generate value is a widget of its own that the prompt leaves out; widgets past the end of
  the saved list (inputs added to a node after the graph was saved) keep their defaults;
- a link is followed through Reroute nodes and through bypassed nodes (mode 4: the input of the link's type);
- muted (mode 2) and bypassed nodes are left out, and so is every input that still points at a left-out node;
- a PrimitiveNode writes its value into the widget it drives; Note-type nodes are dropped;
- text widgets marked dynamicPrompts lose their comments and have {a|b} choices resolved.
"""
import random
import re

from workflow_builder import widget_value_slots

MUTED, BYPASSED = 2, 4
NOTE_TYPES = {"Note", "MarkdownNote"}
REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
TEXT_REPLACEMENTS = "Run widget replace on values"
FRONTEND_ONLY = NOTE_TYPES | {REROUTE, PRIMITIVE}


class WorkflowError(ValueError):
    """The workflow cannot be queued as it stands (what the frontend would refuse or misread)."""


def to_prompt(workflow: dict, object_info: dict, choose=random.choice) -> dict:
    """{node id: {class_type, inputs, _meta}} for a UI-format workflow; `choose` picks dynamic-prompt options."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    unknown = sorted({node["type"] for node in nodes.values()} - set(object_info) - FRONTEND_ONLY)
    if unknown:
        raise WorkflowError(f"node types the server does not have: {', '.join(unknown)}")
    widgets = {node_id: widget_values(node, object_info[node["type"]], choose)
               for node_id, node in nodes.items() if node["type"] not in FRONTEND_ONLY}
    apply_primitives(nodes, links, widgets)
    prompt = {str(node_id): {"class_type": node["type"], "inputs": dict(widgets[node_id]),
                             "_meta": {"title": node.get("title") or object_info[node["type"]].get("display_name")
                                       or node["type"]}}
              for node_id, node in nodes.items() if is_executed(node)}
    for node_id, node in nodes.items():
        if is_executed(node):
            prompt[str(node_id)]["inputs"].update(linked_inputs(node, nodes, links))
    for entry in prompt.values():
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and value[0] not in prompt:
                del entry["inputs"][name]
    return prompt


def is_executed(node: dict) -> bool:
    return node["type"] not in FRONTEND_ONLY and node.get("mode", 0) not in (MUTED, BYPASSED)


def widget_values(node: dict, spec: dict, choose) -> dict:
    """{input name: value} of the node's serialized widgets."""
    saved = node.get("widgets_values") or []
    if isinstance(saved, dict):
        return {name: serialized(saved[name], input_spec, choose)
                for name, input_spec in widget_value_slots(spec) if input_spec is not None and name in saved}
    values = {}
    for index, (name, input_spec) in enumerate(widget_value_slots(spec)):
        if input_spec is not None:
            value = saved[index] if index < len(saved) else widget_default(input_spec)
            values[name] = serialized(value, input_spec, choose)
    return values


def widget_default(input_spec: list):
    """What a widget the saved list does not reach holds: its default, else the frontend's per-type fallback."""
    options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
    if "default" in options:
        return options["default"]
    choices = input_spec[0] if isinstance(input_spec[0], list) else options.get("options")
    if choices is not None:
        return choices[0] if choices else None
    return {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}.get(input_spec[0])


def serialized(value, input_spec: list, choose):
    options = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
    if options.get("dynamicPrompts") and isinstance(value, str):
        value = dynamic_prompt(value, choose)
    return {"__value__": value} if isinstance(value, list) else value


def apply_primitives(nodes: dict, links: dict, widgets: dict) -> None:
    """A PrimitiveNode's value replaces the value of every widget its output drives (its applyToGraph, which runs
    whatever the node's mode)."""
    for node in nodes.values():
        if node["type"] != PRIMITIVE or not node.get("outputs"):
            continue
        value = (node.get("widgets_values") or [None])[0]
        if (node.get("properties") or {}).get(TEXT_REPLACEMENTS) and "%" in str(value):
            raise WorkflowError(f"PrimitiveNode {node['id']} asks for text replacements, which this does not do")
        for link_id in node["outputs"][0].get("links") or []:
            _, _, _, target, slot, _ = links[link_id]
            target_input = nodes[target]["inputs"][slot]
            if "widget" in target_input and target in widgets:
                widgets[target][target_input["widget"]["name"]] = value


def linked_inputs(node: dict, nodes: dict, links: dict) -> dict:
    """{input name: [origin id, origin slot]} for every input whose link resolves to a node's output."""
    found = {}
    for input_slot in node.get("inputs", []):
        if input_slot.get("link") is None:
            continue
        origin = resolve_link(input_slot["link"], input_slot["type"], nodes, links, set())
        if origin is not None:
            found[input_slot["name"]] = [str(origin[0]), int(origin[1])]
    return found


def resolve_link(link_id: int, wanted_type, nodes: dict, links: dict, seen: set):
    """(node id, output slot) a link really comes from: through Reroutes and bypassed nodes; None if nowhere."""
    if link_id in seen:
        raise WorkflowError(f"link {link_id} leads round in a circle")
    seen.add(link_id)
    if link_id not in links:
        raise WorkflowError(f"link {link_id} is not in the workflow's links")
    _, origin_id, origin_slot, _, _, _ = links[link_id]
    origin = nodes[origin_id]
    if origin.get("mode", 0) == BYPASSED:
        index = bypass_input_index(origin, origin_slot, wanted_type)
        return pass_through(origin, index, wanted_type, nodes, links, seen)
    if origin["type"] in FRONTEND_ONLY:
        return pass_through(origin, origin_slot, wanted_type, nodes, links, seen)
    return origin_id, origin_slot


def pass_through(node: dict, index: int, wanted_type, nodes: dict, links: dict, seen: set):
    inputs = node.get("inputs") or []
    if index < 0 or index >= len(inputs) or inputs[index].get("link") is None:
        return None
    return resolve_link(inputs[index]["link"], wanted_type, nodes, links, seen)


def bypass_input_index(node: dict, slot: int, wanted_type) -> int:
    """The input a bypassed node passes to output `slot`: same index if the types fit, else the first of the type."""
    inputs = node.get("inputs") or []
    if wanted_type in ("*", ""):
        return slot if len(inputs) > slot else 0
    output_type = node["outputs"][slot]["type"]
    same = inputs[slot]["type"] if slot < len(inputs) else None
    if same is not None and connects(same, output_type) and connects(same, wanted_type):
        return slot
    exact = [i for i, item in enumerate(inputs) if item["type"] == wanted_type]
    if exact:
        return exact[0]
    return next((i for i, item in enumerate(inputs)
                 if connects(item["type"], output_type) and connects(item["type"], wanted_type)), -1)


def connects(a, b) -> bool:
    """LiteGraph's type check: equal, a wildcard, or comma-separated lists that share a type."""
    if a in ("*", "", 0) or b in ("*", "", 0):
        return True
    a, b = str(a).upper(), str(b).upper()
    return a == b or bool(set(a.split(",")) & set(b.split(",")))


COMMENT = re.compile(r"/\*[\s\S]*?\*/|//.*")


def dynamic_prompt(text: str, choose=random.choice) -> str:
    """The frontend's processDynamicPrompt: C-style comments removed, each {a|b|...} replaced by one option."""
    text = COMMENT.sub("", text)
    result, _ = _expand_choices(text, 0, choose, top=True)
    return re.sub(r"\\([{}|])", r"\1", result)


def _expand_choices(text: str, position: int, choose, top: bool):
    """(expanded text, position after it); inside braces, stops at the closing brace."""
    out, options, depth = "", [], 0
    while position < len(text):
        char = text[position]
        position += 1
        if char == "\\":
            out += "\\" + text[position:position + 1]
            position += 1
        elif top and char == "{":
            chosen, position = _expand_choices(text, position, choose, top=False)
            out += chosen
        elif not top and char == "{":
            depth += 1
            out += char
        elif not top and char == "}":
            if not depth:
                break
            depth -= 1
            out += char
        elif not top and char == "|" and not depth:
            options.append(out)
            out = ""
        else:
            out += char
    if top:
        return out, position
    options.append(out)
    return dynamic_prompt(choose(options), choose), position
