"""Every document pacao reads or writes: YAML (as YAML 1.2 reads numbers) and JSON, with
one-line errors naming the file (pacao.errors.InputError)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from pacao.errors import InputError


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading exponent floats as YAML 1.2 does.

    PyYAML resolves floats by YAML 1.1, which wants a dot and a signed exponent
    (``1.0e+3``): ``1e3``, ``1.0e3`` and ``2E-3`` stay strings and fail every
    number check. The YAML 1.2 core schema, and JSON, read them as numbers.
    """


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


class YamlDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting every string that `YamlLoader` would read as a number.

    Without it a generated secret such as ``8302702503810e98`` is written bare (PyYAML's
    YAML 1.1 resolver does not take it for a float) and read back as ``8.3e+98``.
    """


YamlDumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def dump_yaml(doc: Any, *, sort_keys: bool = True) -> str:
    """Write a document that `parse_yaml` reads back unchanged: every YAML pacao writes."""
    return yaml.dump(doc, Dumper=YamlDumper, sort_keys=sort_keys)


def parse_yaml(text: str) -> Any:
    """Parse one YAML document: every YAML input of pacao goes through here."""
    return yaml.load(text, Loader=YamlLoader)


def load_document(path: Path) -> Any:
    """Parse YAML or JSON (by extension; YAML otherwise, which also reads JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("FILE", str(path), "the file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("FILE", str(path), f"cannot be read ({exc})") from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return parse_yaml(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            "FILE", str(path), f"is not valid JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError("FILE", str(path), f"is not valid YAML{where}") from None
