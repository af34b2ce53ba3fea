# Lists the functions of one Python file that overlap changed lines, for Cairn's measure
# (measure/script_mutants.rs): argv[1] is the file, argv[2] a JSON list of [first, last] line
# ranges. Prints a JSON list of {name, line, body_line, body_col, changed}: where the first
# statement of the body starts, so a fault guard can be put before it at the same indent.
import ast, json, sys

path, ranges = sys.argv[1], json.loads(sys.argv[2])
with open(path, "rb") as handle:
    tree = ast.parse(handle.read(), filename=path)
found = []


def visit(node, owner):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first, last = child.lineno, child.end_lineno or child.lineno
            changed = sum(max(0, min(b, last) - max(a, first) + 1) for a, b in ranges)
            body = child.body[0]
            # A body on the `def` line itself has no line of its own to guard.
            if changed and body.lineno > child.lineno:
                found.append({
                    "name": owner + child.name, "line": first,
                    "body_line": body.lineno, "body_col": body.col_offset, "changed": changed,
                })
            visit(child, owner + child.name + ".")
        elif isinstance(child, ast.ClassDef):
            visit(child, owner + child.name + ".")
        else:
            visit(child, owner)


visit(tree, "")
print(json.dumps(found))
