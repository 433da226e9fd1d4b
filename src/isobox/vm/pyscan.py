"""Run as a script by the guest's interpreter (``python3.11 -I pyscan.py``),
never imported: finds every module the guest program needs and compiles
each source file to an unchecked-hash ``.pyc`` for its guest path.

Input (JSON on stdin): ``src`` (the directory holding the ``isobox``
package), ``site`` (directories of isobox's dependencies), ``roots``
(modules that must import), ``extra`` (modules imported lazily, best
effort), ``exclude``, ``guest_lib`` (where isobox and its dependencies go in
the guest), ``out`` (a directory for the ``.pyc`` files).

The ``isobox`` modules are followed through every import statement in their
source, including those inside functions, since the runtime imports some
modules only when it needs them. A package's ``__main__`` is read, not run.

Output (JSON on stdout): ``files``, a list of ``[host, guest, pyc or ""]``,
and ``failed``, the optional modules that did not import.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import py_compile
import sys


def _imports_in(path: str, package: str) -> tuple[set[str], set[str]]:
    """Modules named by import statements, and names that may be submodules."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    names: set[str] = set()
    maybe: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            names.add(base)
            maybe.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names, maybe


def _main() -> None:
    job = json.load(sys.stdin)
    src = os.path.realpath(job["src"])
    site = [os.path.realpath(p) for p in job["site"]]
    sys.path.insert(0, src)
    sys.path.extend(site)
    followed: set[str] = set()
    failed: list[str] = []
    extra_sources: list[str] = []  # read but not imported (``__main__``)

    def own(path: str | None) -> bool:
        return path is not None and os.path.realpath(path).startswith(src + os.sep)

    def follow() -> None:
        """Import what the isobox modules imported so far name, to a fixpoint."""
        while True:
            pending = [(name, str(mod.__file__), hasattr(mod, "__path__"))
                       for name, mod in list(sys.modules.items())
                       if name not in followed and own(getattr(mod, "__file__", None))]
            if not pending:
                return
            for name, path, is_package in pending:
                followed.add(name)
                scan(path, name if is_package else name.rpartition(".")[0])

    def try_import(name: str, report: bool = True) -> None:
        if name in sys.modules or name in job["exclude"]:
            return
        try:
            importlib.import_module(name)
        except Exception:
            if report:
                failed.append(name)

    def scan(path: str, package: str) -> None:
        names, maybe = _imports_in(path, package)
        for name in sorted(names):
            try_import(name)
        for name in sorted(maybe - names):
            try_import(name, report=False)

    for root in job["roots"]:
        try:
            module = importlib.import_module(root)
        except Exception as exc:
            print(json.dumps({"error": f"{root}: {type(exc).__name__}: {exc}"}))
            return
        main = os.path.join(os.path.dirname(module.__file__ or ""), "__main__.py")
        if hasattr(module, "__path__") and os.path.exists(main):
            extra_sources.append(main)
            scan(main, root)
        follow()
    for name in job["extra"]:
        try_import(name)
    follow()

    def guest_path(path: str) -> str:
        real = os.path.realpath(path)
        for base in [src, *site]:
            if real.startswith(base + os.sep):
                return os.path.join(job["guest_lib"], os.path.relpath(real, base))
        return path

    sources = {mod.__file__ for name, mod in list(sys.modules.items())
               if name not in job["exclude"] and getattr(mod, "__file__", None)}
    sources.update(extra_sources)
    files = []
    for index, host in enumerate(sorted(s for s in sources if s)):
        guest = guest_path(host)
        pyc = ""
        if host.endswith(".py"):
            pyc = os.path.join(job["out"], f"{index}.pyc")
            py_compile.compile(host, cfile=pyc, dfile=guest, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        files.append([host, guest, pyc])
    print(json.dumps({"files": files, "failed": sorted(set(failed))}))


if __name__ == "__main__":
    _main()
