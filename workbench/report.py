"""Plain-text renderings for the terminal (the CLI and the demo)."""

from __future__ import annotations

import textwrap

from .circuit import Circuit


def layer_table(circuit: Circuit, bar_width: int = 40) -> str:
    """Per-layer neuron counts of a circuit as a text bar chart.

    Example:
        >>> from workbench.circuit import Circuit, Neuron
        >>> c = Circuit.from_neurons([Neuron(1, 0, 1.0), Neuron(1, 2, 0.5)], model={
        ...     "name": "m", "architecture": "A", "n_layers": 2, "d_mlp": 4})
        >>> print(layer_table(c, bar_width=4))
        layer  neurons
            1        2  ####
    """
    counts = circuit.layer_counts()
    largest = max(counts.values(), default=1)
    lines = ["layer  neurons"]
    for layer, count in counts.items():
        lines.append(f"{layer:>5}  {count:>7}  {'#' * max(1, round(bar_width * count / largest))}")
    return "\n".join(lines)


def side_by_side(columns: dict[str, str], width: int = 36, gap: str = " | ") -> str:
    """Texts in wrapped columns under their headings.

    Example:
        >>> print(side_by_side({"a": "one two", "b": "three"}, width=5))
        a     | b
        ----- | -----
        one   | three
        two   |
    """
    wrapped = [textwrap.wrap(" ".join(text.split()), width) or [""] for text in columns.values()]
    height = max(len(lines) for lines in wrapped)
    rows = [gap.join(f"{h:<{width}}" for h in columns).rstrip(),
            gap.join("-" * width for _ in columns)]
    for i in range(height):
        cells = [lines[i] if i < len(lines) else "" for lines in wrapped]
        rows.append(gap.join(f"{cell:<{width}}" for cell in cells).rstrip())
    return "\n".join(rows)
