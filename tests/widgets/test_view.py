"""The View base: one status line, one error handler, one display hook, for every view."""

from __future__ import annotations

import ast
from pathlib import Path

import ipywidgets
import pytest
from tests.widgets.widget_fixtures import (  # noqa: F401
    NEGATIVE,
    POSITIVE,
    random_circuit,
    synthetic_circuit,
    tiny_circuit,
)

import widgets
from workbench.errors import InvalidArgumentError, PromptSetError
from widgets.view import View

WIDGETS = Path(widgets.__file__).parent


class Probe(View):
    def __init__(self) -> None:
        super().__init__()
        self.widget = ipywidgets.VBox([self.status])


def raising(error: Exception):
    def action():
        raise error
    return action


def test_act_reports_a_workbench_error_and_clears_it_after_a_success():
    view = Probe()
    assert view.act(lambda: 7) == 7 and view.status.value == ""
    assert view.act(raising(PromptSetError("the <positive> set is empty"))) is None
    assert view.status.value == ('<div class="cna-error" style="color: #b00020;">error: '
                                 'the &lt;positive&gt; set is empty</div>')
    assert view.act(lambda: "fine") == "fine" and view.status.value == ""


def test_act_keeps_lines_the_view_wrote_and_lets_bugs_through():
    view = Probe()
    view.act(lambda: view.say("ok", "discovered 6 neurons"))
    assert "discovered 6 neurons" in view.status.value  # a result, not an old error
    view.act(raising(InvalidArgumentError("no such neuron")))
    view.say("error", "generation failed")  # written by the view (e.g. from a thread)
    view.act(lambda: None)
    assert "generation failed" in view.status.value
    view.clear_status()
    with pytest.raises(ZeroDivisionError):
        view.act(raising(ZeroDivisionError("a bug, not a bad input")))
    assert view.status.value == ""


def _tree(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _tree(child)


def _views(tiny_llama, tiny_circuit):
    synthetic = synthetic_circuit(3, 40)
    return [
        widgets.PromptSetEditor(POSITIVE, NEGATIVE),
        widgets.DifferenceHeatmap(synthetic, interactive=False),
        widgets.CircuitVenn([random_circuit({(0, 1), (1, 2)}), random_circuit({(0, 1)})],
                            interactive=False),
        widgets.SteeringSlider(tiny_llama, tiny_circuit, autorun=False),
        widgets.CircuitExplorer(tiny_llama, POSITIVE, NEGATIVE, circuit=tiny_circuit,
                                interactive=False),
        widgets.show(synthetic, interactive=False),
    ]


def test_every_view_has_a_controller_and_its_status_line_in_its_widget(tiny_llama,
                                                                       tiny_circuit):
    for view in _views(tiny_llama, tiny_circuit):
        name = type(view).__name__
        assert isinstance(view, View), name
        assert not isinstance(view.controller, ipywidgets.Widget), name
        assert any(w is view.status for w in _tree(view.widget)), name
        bundle = view._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle, name
        assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == \
            view.widget.model_id, name


def _classes():
    for path in sorted(WIDGETS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                yield path.name, node


def _is_view(node: ast.ClassDef) -> bool:
    return any(isinstance(b, ast.Name) and b.id == "View" for b in node.bases)


def test_only_the_view_base_displays_handles_errors_and_owns_the_status_line():
    displays, handlers, status_writes = [], [], []
    for module, cls in _classes():
        for node in ast.walk(cls):
            if isinstance(node, ast.FunctionDef) and node.name == "_repr_mimebundle_":
                displays.append(f"{module}:{cls.name}")
            if _is_view(cls) and isinstance(node, ast.ExceptHandler):
                handlers.append(f"{module}:{cls.name}:{node.lineno}")
            if _is_view(cls) and isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if ast.unparse(target).startswith("self.status"):
                        status_writes.append(f"{module}:{cls.name}:{node.lineno}")
    assert displays == ["view.py:View"]
    assert handlers == [], "views report errors through View.act"
    assert status_writes == [], "views write the status line through say/clear_status"


def test_views_never_touch_a_controllers_private_state():
    """In a view, private attributes are read only on itself (or the view it is building)."""
    found = []
    for module, cls in _classes():
        if not (_is_view(cls) or cls.name == "_SideView"):
            continue
        for node in ast.walk(cls):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and node.attr != "_repr_mimebundle_"):
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls", "view")):
                    found.append(f"{module}:{cls.name}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
