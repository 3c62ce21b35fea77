"""cwm-agent's `create` tool, run inside the sandbox by the model's own bash session.

Usage: python3 -I create.py < BODY_AS_BASE64

The tool body arrives base64-encoded on stdin, so no byte of it is ever parsed
by the shell. Its first line is the path (relative paths resolve against the
session's cwd, which is this process's cwd); the rest is the content, written
exactly as given: no newline added, CR bytes kept.

The feedback strings and checks are CWM's, to the byte and in CWM's order
(see cwm_agent/protocol.py, which holds the same literals and is tested
against this script). Exit status: 0 when the file was created, 1 otherwise.

Written for any python3 from 3.5 on (SWE-bench images ship old ones): no
f-strings, stdlib only, I/O in bytes so an ASCII locale cannot break it.
"""

import base64
import os
import sys

EXISTS = "{path} already exists. Cannot create a new file at an existing path."
EMPTY_PATH = "Path is empty. Please provide a valid path."
NO_PARENT = "File creation failed. The parent directory {parent_dir} does not exist."
CREATED = "File created successfully at: {path} ({num_lines} lines)."
# Not a CWM literal: CWM's script crashed with a traceback here.
FAILED = "File creation failed at {path}: {reason}."
ENCODING = "utf-8"
ERRORS = "surrogateescape"  # arbitrary bytes in a path or content survive the round trip


def create(body):
    """Create the file described by body; return (created, feedback)."""
    path, _, content = body.partition("\n")
    fs_path = path.encode(ENCODING, ERRORS)
    if os.path.exists(fs_path):
        return False, EXISTS.format(path=path)
    if path == "":
        return False, EMPTY_PATH
    parent = os.path.dirname(os.path.abspath(fs_path))
    if not os.path.exists(parent):
        return False, NO_PARENT.format(parent_dir=parent.decode(ENCODING, ERRORS))
    try:
        # "xb": never clobber a file that appeared since the check above.
        with open(fs_path, "xb") as handle:
            handle.write(content.encode(ENCODING, ERRORS))
    except (OSError, IOError) as exc:
        return False, FAILED.format(path=path, reason=exc.strerror or exc)
    return True, CREATED.format(path=path, num_lines=content.count("\n") + 1)


def main():
    body = base64.b64decode(sys.stdin.buffer.read()).decode(ENCODING, ERRORS)
    created, feedback = create(body)
    sys.stdout.buffer.write(feedback.encode(ENCODING, ERRORS) + b"\n")
    sys.stdout.flush()
    return 0 if created else 1


if __name__ == "__main__":
    sys.exit(main())
