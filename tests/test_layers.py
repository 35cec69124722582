"""Imports point down (STYLE.md): nothing below the command line imports `loopfix`, and the
policy core imports nothing but the standard library and itself. Read from the source, function
bodies included, so a lazy import cannot hide an upward edge."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BELOW_THE_CLI = ("reference_app", "harness", "sim", "loadtests", "reports", "benchmarks")


def imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (absolute imports; relative ones resolved
    against its package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts[:-1]
    package = ".".join(("loopfix", *parts) if parts and parts[0] in BELOW_THE_CLI else parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
    return found


CLI_MODULES = {f"loopfix.{p.stem}" for p in (ROOT / "loopfix").glob("*.py") if p.stem != "__init__"}


def test_nothing_below_the_cli_imports_it():
    """The folders install under the `loopfix` namespace (`loopfix.sim`, ...); the command line is
    the modules in loopfix/ itself (cli, *_commands, exits, ...), which nothing below may import."""
    upward = {f"{p.relative_to(ROOT)} imports {m}" for pkg in BELOW_THE_CLI for p in (ROOT / pkg).rglob("*.py")
              for m in imports(p) if any(m == c or m.startswith(c + ".") for c in CLI_MODULES)}
    assert upward == set()


def test_the_policy_core_imports_only_the_standard_library_and_itself():
    outside = {f"{p.relative_to(ROOT)} imports {m}" for p in (ROOT / "reference_app" / "policy").rglob("*.py")
               for m in imports(p)
               if m.split(".")[0] not in sys.stdlib_module_names and not m.startswith("loopfix.reference_app.policy")}
    # the package's PEP 562 shim resolves moved names (media_host_allowed, ...) from their homes by
    # importlib at first use, not by an import statement: it adds no edge here
    assert outside == set()
