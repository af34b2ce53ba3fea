# Lists the function bodies of one Python file, for Cairn's per-test coverage selection
# (per_test.rs): the file's text on stdin, a JSON list of [first, last] changed line ranges in
# argv[1]. Prints {"functions": {qualname: [body_first, last] or null when defined twice},
# "ranges": [qualname of the innermost function whose body holds the whole range, or null]}.
# A body starts at its first statement: a `def` line, its decorators and signature run when
# the enclosing code runs, not when the function is called.
import ast, json, sys

ranges = json.loads(sys.argv[1])
tree = ast.parse(sys.stdin.buffer.read())
functions, bodies = {}, []


def visit(node, owner):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = owner + child.name
            body = (child.body[0].lineno, child.end_lineno or child.lineno)
            functions[name] = None if name in functions else list(body)
            bodies.append((name, body))
            visit(child, name + ".")
        elif isinstance(child, ast.ClassDef):
            visit(child, owner + child.name + ".")
        else:
            visit(child, owner)


visit(tree, "")
found = []
for first, last in ranges:
    holding = [(b[1] - b[0], n) for n, b in bodies if b[0] <= first and last <= b[1]]
    found.append(min(holding)[1] if holding else None)
print(json.dumps({"functions": functions, "ranges": found}))
