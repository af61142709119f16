"""Pipeline layer: output names derived from input names, made safe as one file or folder name in the output folder.

A video's name becomes ``<out>/<name>/`` and ``<name>.VA.txt``; a hostile or odd input name must not
let that path leave the output folder (``..mp4`` has the stem ``.``, ``...mp4`` the stem ``..``), hide
it (a leading dot), collide with the staging folders (``.<name>.partial-*``), break the terminal
(control characters) or exceed the file system's name limit.
"""

from __future__ import annotations

MAX_NAME_BYTES = 160  # UTF-8 bytes; staging adds ~25 and file suffixes ~10 to stay below the usual 255
FALLBACK = "video"  # the name of an input whose name has nothing usable left


def output_name(raw: str) -> str:
    """``raw`` (a file stem or folder name) as a safe single path component.

    Path separators, NUL, control and other unprintable characters (also undecodable bytes, which
    Python keeps as lone surrogates) become ``_``; leading dots become ``_`` (so ``.`` and ``..``
    cannot occur and nothing is hidden); an empty or blank name becomes ``video``; long names are
    cut to ``MAX_NAME_BYTES`` bytes of UTF-8 at a character boundary. Ordinary names are unchanged.
    """
    chars = ["_" if (c in "/\\" or not c.isprintable()) else c for c in str(raw)]
    name = "".join(chars)
    stripped = name.lstrip(".")
    name = "_" * (len(name) - len(stripped)) + stripped
    if not name.strip():
        name = FALLBACK
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", errors="ignore")
    return name
