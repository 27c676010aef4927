"""No import circles: every project module is either above or below another, never both."""

from __future__ import annotations

import grimp


def test_no_project_module_imports_back_what_imports_it():
    graph = grimp.build_graph("activestream")
    circles = []
    for module in sorted(m for m in graph.modules if m.startswith("activestream.")):
        for imported in graph.find_modules_directly_imported_by(module):
            related = module.startswith(imported + ".") or imported.startswith(module + ".")
            if not imported.startswith("activestream.") or related:
                continue  # a package and its own modules import each other by design
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                circles.append(f"{module} -> {' -> '.join(back)}")
    assert not circles, "import circles:\n" + "\n".join(circles)
