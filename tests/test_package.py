"""The package's shape: explicit exports, one home per name, no reach into private names,
optional dependencies that stay optional."""

import ast
import pathlib
import subprocess
import sys

import rnnjax as rj

PACKAGE = pathlib.Path(rj.__file__).parent


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_all_is_static_and_every_name_resolves():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assigned = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "__all__"]
    assert len(assigned) == 1 and isinstance(assigned[0].value, ast.List)
    names = [e.value for e in assigned[0].value.elts]
    assert names == rj.__all__ and len(set(names)) == len(names)
    assert [n for n in names if not hasattr(rj, n)] == []
    # nothing is star-imported and nothing is added to __all__ at run time
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)]
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.AugAssign)]


def test_each_public_name_is_defined_in_one_module():
    defined: dict[str, list[str]] = {}
    for path in PACKAGE.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in rj.__all__:
                defined.setdefault(node.name, []).append(path.stem)
    assert {n: m for n, m in defined.items() if len(m) > 1} == {}
    assert sorted(set(rj.__all__) - set(defined)) == []


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rnnjax"):
                offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not (PACKAGE / f"{a.name}.py").exists()]
    # private modules (_checks, _registry, ...) exist to be shared; their names are not private
    assert offenders == []


def test_import_rnnjax_imports_no_optional_library():
    out = _run("import sys, rnnjax; print(sorted(m for m in ('flax', 'torch', 'haiku', 'equinox', 'keras', 'chex') "
               "if m in sys.modules))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_nnx_without_flax_names_the_extra():
    out = _run("import sys; sys.modules['flax'] = None\n"
               "import rnnjax\n"
               "try:\n    import rnnjax.nnx\nexcept ImportError as e:\n    print('ImportError:', e)")
    assert out.returncode == 0, out.stderr
    assert "rnnjax.nnx needs flax" in out.stdout and "pip install 'rnnjax[nnx]'" in out.stdout
