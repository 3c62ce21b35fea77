"""cwm-agent's `edit` tool, run inside the sandbox by the model's own bash session.

Usage: python3 -I edit.py < BODY_AS_BASE64

The tool body arrives base64-encoded on stdin, so no byte of it is ever parsed
by the shell. The first line is the path (relative paths resolve against the
session's cwd, which is this process's cwd), then exactly one block:

    <<<<<<< SEARCH
    [search_lines]
    =======
    [replacement_lines]
    >>>>>>> REPLACE

The feedback strings and the match/replace rules are CWM's, to the byte
(see cwm_agent/protocol.py, which holds the same literals and is tested
against this script). Exit status: 0 when the file changed, 1 otherwise.

Written for any python3 from 3.5 on (SWE-bench images ship old ones): no
f-strings, stdlib only, I/O in bytes so an ASCII locale cannot break it.
"""

import base64
import os
import re
import sys

BLOCK = re.compile(
    r"(.*)\n<<<<<<< SEARCH\n([\s\S]*?)\n=======\n([\s\S]*?)\n>>>>>>> REPLACE"
)
PARSE_ERROR = (
    "Failed to parse the edit tool call. Make sure it has the following format:\n"
    "\n"
    "<tool: edit>\n"
    "[path]\n"
    "<<<<<<< SEARCH\n"
    "[search_lines]\n"
    "=======\n"
    "[replacement_lines]\n"
    ">>>>>>> REPLACE\n"
    "</tool>"
)
TOO_MANY_BLOCKS = "Only one search/replace block is allowed. Got: {count}."
NO_PATH = "The path {path} does not exist. Please provide a valid path."
NOT_FOUND = "No replacement was performed, the search lines did not appear verbatim in {path}."
INDENT_HINT = (
    " The search lines must exactly match one or more consecutive lines from the file,"
    " with indentations preserved."
)
MULTIPLE = (
    "No replacement was performed. Multiple occurrences of the search text in lines"
    " {linenums} of {path}. Please ensure it is unique."
)
SUCCESS = (
    "File {path} has been successfully updated at line {line} and now contains"
    " {num_lines} lines. The surrounding lines after the edit are shown below:\n"
    "{snippet}\n"
    "Review the changes and make sure they are as expected."
)
# Not CWM literals: CWM's script crashed with a traceback here.
UNREADABLE = "Failed to edit {path}: {reason}. Please provide the path of a readable text file."
UNWRITABLE = "Failed to edit {path}: {reason}. The file was not changed."
SNIPPET_LINES = 8
CR_AT_LINE_END = re.compile(r"\r(?=\n|$)")
ENCODING = "utf-8"
ERRORS = "surrogateescape"  # keeps undecodable bytes of the file intact on write-back


def positions(text, sub):
    """Start index of every occurrence of sub, overlapping ones included."""
    found = []
    start = text.find(sub)
    while start != -1:
        found.append(start)
        start = text.find(sub, start + 1)
    return found


def read_text(raw):
    """Decode a file; return (text, line end used when writing it back).

    A file whose every line ends in CRLF is edited as if it had "\\n" line ends
    (as Python's universal newlines did for CWM's script, so search lines
    written with "\\n" match) and keeps CRLF when written back, instead of
    becoming a whole-file diff. Files with mixed or lone CRs are edited byte
    for byte, for the same reason.
    """
    text = raw.decode(ENCODING, ERRORS)
    if "\r" in text and text.count("\r\n") == text.count("\r") == text.count("\n"):
        return text.replace("\r\n", "\n"), "\r\n"
    return text, "\n"


def edit(body):
    """Apply the edit described by body; return (changed, feedback)."""
    blocks = BLOCK.findall(body)
    if not blocks:
        return False, PARSE_ERROR
    if len(blocks) > 1:
        return False, TOO_MANY_BLOCKS.format(count=len(blocks))
    path, search, replacement = blocks[0]
    fs_path = path.encode(ENCODING, ERRORS)
    if not os.path.exists(fs_path):
        return False, NO_PATH.format(path=path)
    try:
        with open(fs_path, "rb") as handle:
            original, line_end = read_text(handle.read())
    except (OSError, IOError) as exc:
        return False, UNREADABLE.format(path=path, reason=exc.strerror or exc)

    if line_end == "\r\n":
        # Lines copied from a CRLF file may carry their "\r" along, the last one too.
        search = CR_AT_LINE_END.sub("", search)
        replacement = CR_AT_LINE_END.sub("", replacement)

    # A leading "\n" on both sides makes the search start at a line start.
    content = "\n" + original
    needle = "\n" + search
    found = positions(content, needle)
    if not found:
        message = NOT_FOUND.format(path=path)
        first_line = search.split("\n", 1)[0]
        if first_line.lstrip() in content:
            message += INDENT_HINT
        return False, message
    if len(found) > 1:
        # Line n starts right after the (n-1)th "\n" of the prefixed content.
        linenums = [content.count("\n", 0, at) + 1 for at in found]
        return False, MULTIPLE.format(linenums=linenums, path=path)

    at = found[0]
    updated = content[:at] + "\n" + replacement + content[at + len(needle):]
    updated = updated[1:]
    try:
        with open(fs_path, "wb") as handle:
            handle.write(updated.replace("\n", line_end).encode(ENCODING, ERRORS))
    except (OSError, IOError) as exc:
        return False, UNWRITABLE.format(path=path, reason=exc.strerror or exc)

    line = content.count("\n", 0, at) + 1
    first = max(1, line - SNIPPET_LINES)
    last = line + SNIPPET_LINES + replacement.count("\n")
    shown = updated.split("\n")[first - 1:last]
    snippet = "\n".join(
        "{:6}\t{}".format(number, text) for number, text in enumerate(shown, start=first)
    )
    return True, SUCCESS.format(
        path=path, line=line, num_lines=updated.count("\n") + 1, snippet=snippet
    )


def main():
    body = base64.b64decode(sys.stdin.buffer.read()).decode(ENCODING, ERRORS)
    changed, feedback = edit(body)
    sys.stdout.buffer.write(feedback.encode(ENCODING, ERRORS) + b"\n")
    sys.stdout.flush()
    return 0 if changed else 1


if __name__ == "__main__":
    sys.exit(main())
