"""One contract per module and role: what DOCUMENTATION says is what the module accepts (names,
types, defaults, choices, required, no_log), and a role's defaults are the ones its argument spec
documents. A disagreement fails here, not in an operator's run."""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import yaml

from tests.conftest import REPO

# modules with code (a module file that only documents an action plugin has no argument spec here)
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py") if "\ndef main(" in p.read_text())
# every role: one without an argument spec fails its test (ansible-doc would print nothing for it)
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks").is_dir())


class _CapturedError(Exception):
    pass


def argument_spec(name: str) -> dict:
    """The argument spec module ``name`` hands to AnsibleModule (its main() stopped right there)."""
    sys.path.insert(0, str(REPO / "collections"))
    try:
        module = importlib.import_module(f"ansible_collections.weltgewebe.ops.plugins.modules.{name}")
    finally:
        sys.path.pop(0)
    if not hasattr(module, "main"):
        return {}
    captured = {}

    def capture(self, argument_spec, **_kw):
        captured.update(argument_spec)
        raise _CapturedError

    # the modules build an AnsibleModule (WgopsModule is one): stop at its constructor
    from ansible.module_utils.basic import AnsibleModule

    original = AnsibleModule.__init__
    AnsibleModule.__init__ = capture
    try:
        module.main()
    except _CapturedError:
        pass
    finally:
        AnsibleModule.__init__ = original
    return captured


def _doc(path) -> dict:
    """The DOCUMENTATION of one of our files (module or doc fragment), read without running it."""
    namespace: dict = {}
    exec(compile(path.read_text().split("\nfrom ansible", 1)[0], str(path), "exec"), namespace)
    holder = namespace.get("ModuleDocFragment")
    return yaml.safe_load(holder.DOCUMENTATION if holder else namespace["DOCUMENTATION"])


def documented(name: str) -> dict:
    """The module's options, its documentation fragments' merged in."""
    doc = _doc(REPO / "plugins" / "modules" / f"{name}.py")
    options = dict(doc.get("options") or {})
    for fragment in doc.get("extends_documentation_fragment") or []:
        if fragment.startswith("weltgewebe.ops."):  # ansible.builtin's fragments describe attributes only
            fragment_doc = _doc(REPO / "plugins" / "doc_fragments" / f"{fragment.rsplit('.', 1)[-1]}.py")
            options.update(fragment_doc.get("options") or {})
    return options


def _norm(spec: dict) -> dict:
    return {
        "type": spec.get("type", "str"),
        "default": spec.get("default"),
        "choices": sorted(spec["choices"]) if spec.get("choices") else None,
        "required": bool(spec.get("required", False)),
        "elements": spec.get("elements"),
    }


@pytest.mark.parametrize("name", MODULES)
def test_a_module_accepts_what_its_documentation_says(name):
    spec = argument_spec(name)
    assert spec, f"{name}: no argument spec captured"
    docs = documented(name)
    assert sorted(spec) == sorted(docs), f"{name}: documented but not accepted, or accepted but not documented"
    for option, given in spec.items():
        assert _norm(given) == _norm(docs[option]), f"{name}: option {option}"
        if any(word in option for word in ("secret", "password", "dsn")):
            assert given.get("no_log"), f"{name}: option {option} holds a secret and must be no_log"


@pytest.mark.parametrize("role", ROLES)
def test_a_role_documents_its_defaults(role):
    root = REPO / "roles" / role
    specs_file = root / "meta" / "argument_specs.yml"
    assert specs_file.exists(), f"{role} has no meta/argument_specs.yml: ansible-doc -t role says nothing of it"
    # its entry points: main, or the task file every play imports first (the drill's begin)
    entry_points = yaml.safe_load(specs_file.read_text())["argument_specs"]
    spec = {option: given for entry in entry_points.values() for option, given in (entry.get("options") or {}).items()}
    defaults_file = root / "defaults" / "main.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) or {} if defaults_file.exists() else {}
    assert not set(defaults) - set(spec), f"{role}: defaults without a documented option"
    for option, value in defaults.items():
        if (
            "{{" in str(value)
            or isinstance(value, dict)
            or (isinstance(value, list) and value and not all(isinstance(v, (str, int, float)) for v in value))
        ):
            continue  # computed from other options, or a structure: the spec states it in words
        documented_default = spec[option].get("default")
        assert documented_default == value or (value in ("", [], {}) and documented_default in ("", [], {}, None)), (
            f"{role}: {option} defaults to {value!r}, its argument spec says {documented_default!r}"
        )


def test_action_groups_are_what_the_modules_say_and_take_the_defaults_set_for_them():
    groups = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text()).get("action_groups") or {}
    declared: dict[str, set] = {}
    for path in (REPO / "plugins" / "modules").glob("*.py"):
        attribute = (_doc(path).get("attributes") or {}).get("action_group") or {}
        for group in attribute.get("membership") or []:
            declared.setdefault(group, set()).add(path.stem)
    assert declared == {f"weltgewebe.ops.{group}": set(members) for group, members in groups.items()}
    # module_defaults hands a group's options to every member: each must accept them
    for path in (REPO / "roles").glob("*/tasks/*.yml"):
        for task in yaml.safe_load(path.read_text()) or []:
            for key, options in (task.get("module_defaults") or {}).items():
                group = key.removeprefix("group/weltgewebe.ops.")
                for member in groups[group]:
                    missing = set(options) - set(documented(member))
                    assert not missing, f"{path}: {member} does not take {missing} (module_defaults of {key})"


def test_the_contract_names_modules_accept_are_the_librarys():
    """names' suboptions (module_utils) are exactly ContractNames' fields (the library's settings)."""
    sys.path.insert(0, str(REPO / "collections"))
    try:
        from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import CONTRACT_NAME_OPTIONS
    finally:
        sys.path.pop(0)
    from weltgewebe_ops.core.settings import ContractNames

    fields = ContractNames.__dataclass_fields__
    assert set(CONTRACT_NAME_OPTIONS) == set(fields)
    for name, option in CONTRACT_NAME_OPTIONS.items():
        assert option["type"] == ("int" if fields[name].type in ("int", int) else "str"), name
    documented_names = _doc(REPO / "plugins" / "doc_fragments" / "events.py")["options"]["names"]["suboptions"]
    assert set(documented_names) == set(fields)


def test_a_name_left_out_keeps_weltgewebes():
    """Ansible hands every suboption, None where the play set none: those keep the defaults."""
    sys.path.insert(0, str(REPO / "collections"))
    try:
        from ansible_collections.weltgewebe.ops.plugins.module_utils._wgops import (
            CONTRACT_NAME_OPTIONS,
            contract_names,
        )
    finally:
        sys.path.pop(0)

    given = {**dict.fromkeys(CONTRACT_NAME_OPTIONS), "outbox_table": "my_outbox"}
    module = types.SimpleNamespace(params={"names": given})
    names = contract_names(module)
    assert names.outbox_table == "my_outbox" and names.stream == "WELTGEWEBE_DOMAIN"
    assert names.duplicate_window_seconds == 120


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py")))
def test_every_return_value_has_a_sample(name):
    """ansible-doc shows what a module returns by example: every RETURN value has one."""
    source = (REPO / "plugins" / "modules" / f"{name}.py").read_text()
    returned = yaml.safe_load(source.split('RETURN = r"""', 1)[1].split('"""', 1)[0]) or {}
    assert not [key for key, doc in returned.items() if "sample" not in doc], f"{name}: RETURN values without sample"
