#!/usr/bin/env python3
"""Fails when a libwithcache source includes a header of a module it does not depend on.

    scripts/check_layering.py [REPO]

Reads libwithcache/CMakeLists.txt: each withcache_module() names its SOURCES, its public HEADERS and the
withcache_* modules it links (PUBLIC or PRIVATE; $<TARGET_OBJECTS:...> counts as a link). A header belongs
to the module that lists it (public, under include/withcache/) or, for an internal header under src/, to
the module whose sources sit beside it (X.hpp with X.cpp, else the folder's one module). Every
`#include "..."` in a module's sources and headers must name a header of that module or of one it depends
on, directly or not — so dependencies point one way (docs/architecture.md) and a new edge is a CMake
change someone reviews, not an include that slips in. Prints each violation as `file:line: ...`.
"""
import os
import re
import sys

MODULE = re.compile(r"withcache_module\((\w+)(.*?)\)\s*$", re.S | re.M)
KEYWORDS = {"SHARED", "INTERNAL", "EXPORT", "SOURCES", "HEADERS", "PUBLIC", "PRIVATE"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def parse_modules(cmake_text):
    modules = {}
    for name, body in MODULE.findall(cmake_text):
        words = body.replace("\n", " ").split()
        sections = {}
        current = None
        for word in words:
            if word in KEYWORDS:
                current = word
                sections.setdefault(current, [])
            elif current is not None:
                sections[current].append(word)
        deps = set()
        for word in sections.get("PUBLIC", []) + sections.get("PRIVATE", []) + sections.get("SOURCES", []):
            for found in re.findall(r"\b(withcache(?:_\w+)?)\b", word):
                if found != name:
                    deps.add(found)
        sources = [w for w in sections.get("SOURCES", []) if w.startswith("src/")]
        headers = sections.get("HEADERS", [])
        modules[name] = {"deps": deps, "sources": sources, "headers": headers}
    return modules


def closure(modules, name, seen=None):
    seen = set() if seen is None else seen
    for dep in modules.get(name, {}).get("deps", ()):
        if dep in modules and dep not in seen:
            seen.add(dep)
            closure(modules, dep, seen)
    return seen


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    lib = os.path.join(repo, "libwithcache")
    with open(os.path.join(lib, "CMakeLists.txt")) as f:
        modules = parse_modules(f.read())
    if len(modules) < 5:
        print("check_layering: could not read the modules from libwithcache/CMakeLists.txt")
        return 2

    owner = {}  # include path as written ("withcache/url.hpp", "http/http.hpp") -> module
    files = {}  # file path relative to libwithcache -> module
    for name, module in modules.items():
        for header in module["headers"]:
            # The first module to list a header owns it; withcache_client lists the headers of the
            # modules it carries whole, which does not make them its own.
            owner.setdefault("withcache/" + header, name)
            files.setdefault("include/withcache/" + header, name)
        for source in module["sources"]:
            files[source] = name
    owner["withcache/version.hpp"] = None  # generated: anyone may include it
    folders = {}
    for source, name in files.items():
        if source.startswith("src/"):
            folders.setdefault(os.path.dirname(source), set()).add(name)
    for folder, names in folders.items():
        for entry in sorted(os.listdir(os.path.join(lib, folder))):
            if not entry.endswith(".hpp"):
                continue
            path = os.path.join(folder, entry)
            twin = path[:-4] + ".cpp"
            name = files.get(twin) or (next(iter(names)) if len(names) == 1 else None)
            if name is None:
                print(f"libwithcache/{path}: no module owns it (no {os.path.basename(twin)} beside it, "
                      f"and {folder} holds several modules)")
                return 1
            owner[path[len("src/"):]] = name
            files[path] = name

    violations = 0
    checked = 0
    for path, name in sorted(files.items()):
        allowed = closure(modules, name) | {name}
        with open(os.path.join(lib, path), encoding="utf-8") as f:
            text = f.read()
        for match in INCLUDE.finditer(text):
            included = match.group(1)
            checked += 1
            line = text.count("\n", 0, match.start()) + 1
            if included not in owner:
                continue  # a header of this folder by a relative name, or a generated file
            target = owner[included]
            if target is not None and target not in allowed:
                violations += 1
                print(f"libwithcache/{path}:{line}: {name} includes \"{included}\" of {target}, "
                      f"which {name} does not link (add it in libwithcache/CMakeLists.txt if the edge is meant)")
    print(f"check_layering: {len(files)} files of {len(modules)} modules, {checked} includes, "
          f"{violations} against the direction")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
