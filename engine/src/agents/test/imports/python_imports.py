# Reads the Python files named on stdin (one path a line, relative to the working directory)
# with CPython's own parser and prints, per file, what it imports: one JSON object a line.
# Used by Cairn's test selection (imports/python.rs). Static imports are listed exactly;
# anything that may import what cannot be read statically (import_module or __import__ of a
# computed name, exec/eval of computed text, a file that does not parse) is marked dynamic,
# and Cairn then treats the file as importing everything. exec/eval of computed text is not
# dynamic when no string of the file (docstrings aside) contains "import": the code a module
# builds from its own templates (namedtuple-style classes, signature-preserving wrappers)
# imports nothing then — the stated assumption being that text passed in from outside comes
# from a file that names what it imports.
import ast, json, sys

DYNAMIC_CALLS = {
    "import_module", "__import__", "run_module", "run_path", "load_source",
    "spec_from_file_location", "load_module", "exec", "eval", "execfile",
    "iter_modules", "walk_packages", "load_entry_point", "entry_points",
}
LITERAL_IMPORTS = {"import_module", "__import__", "run_module"}


def name_of(func):
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def literal(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def docstrings(tree):
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and literal(body[0].value) is not None:
                found.add(id(body[0].value))
    return found


def names_import(tree):
    skipped = docstrings(tree)
    return any(
        isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in skipped and "import" in node.value
        for node in ast.walk(tree)
    )


def scan(path):
    with open(path, "rb") as handle:
        tree = ast.parse(handle.read(), filename=path)
    imports, dynamic, sys_path = [], [], False
    templates_import = names_import(tree)
    for node in ast.walk(tree):
        # sys.path.insert(...), sys.path = [...]: imports may then resolve from anywhere.
        if (isinstance(node, ast.Attribute) and node.attr == "path"
                and isinstance(node.value, ast.Name) and node.value.id == "sys"):
            sys_path = True
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports.append({"module": alias.name, "level": 0, "names": []})
        elif isinstance(node, ast.ImportFrom):
            imports.append({
                "module": node.module or "",
                "level": node.level or 0,
                "names": [alias.name for alias in node.names],
            })
        elif isinstance(node, ast.Call):
            called = name_of(node.func)
            if called not in DYNAMIC_CALLS:
                continue
            first = literal(node.args[0]) if node.args else None
            if called in LITERAL_IMPORTS and first is not None:
                level = len(first) - len(first.lstrip("."))
                imports.append({"module": first.lstrip("."), "level": level, "names": []})
            elif called in ("exec", "eval") and first is not None and "import" not in first:
                continue
            elif called in ("exec", "eval") and first is None and not templates_import:
                continue
            else:
                dynamic.append("%s() on line %d" % (called, node.lineno))
        elif isinstance(node, ast.Assign):
            # pytest_plugins = ["pkg.fixtures", ...] loads those modules as plugins.
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if "pytest_plugins" in targets:
                values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
                for value in values:
                    text = literal(value)
                    if text is None:
                        dynamic.append("pytest_plugins on line %d" % node.lineno)
                    else:
                        imports.append({"module": text, "level": 0, "names": []})
    return {"imports": imports, "dynamic": dynamic, "sys_path": sys_path}


for line in sys.stdin:
    path = line.rstrip("\n")
    if not path:
        continue
    try:
        found = scan(path)
    except Exception as error:  # a file that does not parse may import anything
        found = {"imports": [], "sys_path": False, "dynamic": ["unreadable: %s" % str(error).splitlines()[0][:200]]}
    found["path"] = path
    print(json.dumps(found))
