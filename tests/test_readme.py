"""The README's node reference and test command stay in step with the code and CI."""
import os
import re

from latent_lab.nodes import NODE_CLASS_MAPPINGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def node_table_keys() -> list[str]:
    section = README.split("## Node reference", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\|[^|]*\|\s*`(LatentLab\w+)`", section, flags=re.M)


def test_node_table_lists_exactly_the_registered_nodes():
    keys = node_table_keys()
    assert len(keys) == len(set(keys)), "a node is listed twice"
    assert set(keys) == set(NODE_CLASS_MAPPINGS)


def test_node_table_categories_match():
    section = README.split("## Node reference", 1)[1].split("\n## ", 1)[0]
    for key, cls in NODE_CLASS_MAPPINGS.items():
        row = next(line for line in section.splitlines() if f"`{key}`" in line)
        assert cls.CATEGORY in row, f"{key}: README says {row!r}, code says {cls.CATEGORY}"


def test_ci_runs_the_readme_test_command():
    command = re.search(r"```(?:sh|bash)\n(python3 -m pytest)\n```", README)
    assert command, "README must show the test command in its own code block"
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert command.group(1) in ci.splitlines()
