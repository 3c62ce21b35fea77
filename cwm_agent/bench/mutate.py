"""Procedural bugs for generated tasks: small AST-located edits spliced into the source text.

Every mutation replaces one byte range of a file's UTF-8 text (found from the AST
node positions, which count UTF-8 bytes) with new text, so a mutant differs from
the original in exactly the tokens the bug touches and the gold patch is as small
as a human fix. Only code inside functions (bodies and default arguments) is
mutated: that is where a bug has a function to be reported against.

Operators (`Mutation.operator`):
  flip_compare    `<` -> `<=`, `==` -> `!=`, `in` -> `not in`, `is` -> `is not` and back
  flip_operator   `+` <-> `-`, `*` -> `//`, `/` -> `*`, `<<` <-> `>>`, `&` <-> `|` ... (also `+=`)
  flip_boolean    `and` <-> `or`, `not x` -> `x`
  drop_statement  delete a statement that is not the only one in its block
  swap_branches   swap an if/else's two blocks, or `a if c else b` -> `b if c else a`
  change_constant n -> n+1 / n-1, True <-> False, "" -> "x"
  off_by_one      a slice bound or range() argument e -> e + 1 / e - 1
"""

from __future__ import annotations

import ast
import re
import threading
from dataclasses import dataclass

OPERATORS = (
    "flip_compare",
    "flip_operator",
    "flip_boolean",
    "drop_statement",
    "swap_branches",
    "change_constant",
    "off_by_one",
)

# What each operator does, as a bug kind for a task row.
BUG_KINDS = {
    "flip_compare": "flipped comparison",
    "flip_operator": "wrong arithmetic or bitwise operator",
    "flip_boolean": "wrong boolean logic",
    "drop_statement": "missing statement",
    "swap_branches": "swapped branches",
    "change_constant": "wrong constant",
    "off_by_one": "off-by-one",
}

_COMPARE = {
    ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
    ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.Is: ("is", "is not"),
    ast.IsNot: ("is not", "is"), ast.In: ("in", "not in"), ast.NotIn: ("not in", "in"),
}
_COMPARE_TOKEN = re.compile(rb"not\s+in\b|is\s+not\b|==|!=|<=|>=|<|>|\bin\b|\bis\b")

_BINARY = {
    ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "//"), ast.Div: ("/", "*"),
    ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*"),
    ast.LShift: ("<<", ">>"), ast.RShift: (">>", "<<"), ast.BitAnd: ("&", "|"),
    ast.BitOr: ("|", "&"), ast.BitXor: ("^", "|"),
}
_BINARY_TOKEN = re.compile(rb"\*\*|//|<<|>>|[-+*/%&|^@]")
_AUG_TOKEN = re.compile(rb"(\*\*|//|<<|>>|[-+*/%&|^@])=")

# Expressions that need no parentheses before `+ 1`.
_TIGHT = (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.Constant, ast.UnaryOp)
_TIGHT_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.MatMult)
# Statements whose removal only breaks the module's structure (or does nothing).
_DROP_MAX_LINES = 4
_NEVER_DROP = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom,
               ast.Global, ast.Nonlocal, ast.Pass)


@dataclass(frozen=True)
class Mutation:
    """One bug: replace bytes [start, end) of `path`'s UTF-8 text with `replacement`."""

    path: str  # relative to the project root, "/"-separated
    operator: str  # one of OPERATORS
    start: int
    end: int
    original: str
    replacement: str
    line: int  # 1-based line of `start`
    function: str  # qualified name of the enclosing function ("Class.method")
    description: str  # for people: what was changed

    @property
    def top_level(self) -> str:
        """The module-level name the bug lives under (a function or a class)."""
        return self.function.split(".", 1)[0]

    def apply(self, source: str) -> str:
        data = source.encode("utf-8")
        if data[self.start:self.end].decode("utf-8") != self.original:
            raise ValueError(f"{self.path}:{self.line}: the source changed; cannot apply {self.description}")
        return (data[:self.start] + self.replacement.encode("utf-8") + data[self.end:]).decode("utf-8")


# CPython 3.11 builds ASTs with interpreter-wide recursion bookkeeping: two threads parsing at once
# can fail with "SystemError: AST constructor recursion depth mismatch" (seen in `tasks generate
# --jobs 2`). Every parse and compile in the generator goes through this lock.
_AST_LOCK = threading.Lock()


def parse(text: str) -> ast.Module:
    """ast.parse, safe to call from the generator's worker threads."""
    with _AST_LOCK:
        return ast.parse(text)


def compiles(text: str, path: str) -> bool:
    """Is `text` valid Python (compile also catches `break` outside a loop)? Thread-safe."""
    try:
        with _AST_LOCK:
            compile(text, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


def find_mutations(source: str, path: str, *, validate: bool = False) -> list[Mutation]:
    """Every mutation of `source` (the text of `path`), in file order.

    Nearly all of them parse; checking each costs a parse of the whole file, so
    `validate` is off by default and `mutant()` checks the ones actually used.
    """
    try:
        tree = parse(source)
    except SyntaxError:
        return []
    finder = _Finder(source, path)
    finder.visit(tree)
    found: dict[tuple[int, int, str], Mutation] = {}
    for mutation in finder.found:
        key = (mutation.start, mutation.end, mutation.replacement)
        if key not in found and (not validate or mutant(source, mutation) is not None):
            found[key] = mutation
    return sorted(found.values(), key=lambda m: (m.start, m.end, m.operator, m.replacement))


def mutant(source: str, mutation: Mutation) -> str | None:
    """`source` with `mutation` applied, or None when the result is no valid Python."""
    text = mutation.apply(source)
    return text if compiles(text, mutation.path) else None


class _Finder(ast.NodeVisitor):
    def __init__(self, source: str, path: str) -> None:
        self.data = source.encode("utf-8")
        self.path = path
        self.line_starts = [0]
        for match in re.finditer(rb"\n", self.data):
            self.line_starts.append(match.end())
        self.scope: list[str] = []  # enclosing class and function names
        self.depth = 0  # how many functions we are inside
        self.skip: set[int] = set()  # ids of nodes some operator must leave alone
        self.found: list[Mutation] = []

    # --- positions ---------------------------------------------------------------------

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (self.offset(node.lineno, node.col_offset),  # type: ignore[attr-defined]
                self.offset(node.end_lineno, node.end_col_offset))  # type: ignore[attr-defined]

    def text(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8")

    def line_of(self, offset: int) -> int:
        lo, hi = 0, len(self.line_starts) - 1
        while lo < hi:  # the last line start <= offset
            mid = (lo + hi + 1) // 2
            if self.line_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def line_end(self, line: int) -> int:
        """Offset just past line `line`'s newline (or the end of the file)."""
        return self.line_starts[line] if line < len(self.line_starts) else len(self.data)

    def add(self, operator: str, start: int, end: int, replacement: str, description: str) -> None:
        original = self.text(start, end)
        if original == replacement:
            return
        function = ".".join(self.scope)
        where = f"{self.path}:{self.line_of(start)}"
        self.found.append(Mutation(
            path=self.path, operator=operator, start=start, end=end, original=original,
            replacement=replacement, line=self.line_of(start), function=function,
            description=f"{description} in {function} ({where})",
        ))

    # --- scopes ------------------------------------------------------------------------

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        for stmt in node.body:  # not the decorators or base classes
            self.visit(stmt)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.depth += 1
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        body = node.body
        if body and _is_docstring(body[0]):
            self.skip.add(id(body[0].value))  # type: ignore[attr-defined]
        self.visit_block(body)
        for stmt in body:
            self.visit(stmt)
        self.depth -= 1
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # f-string parts have unreliable positions before Python 3.12

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)  # the annotation itself is no code
        if node.value is not None:
            self.visit(node.value)

    def generic_visit(self, node: ast.AST) -> None:
        if self.depth:
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                    self.visit_block(block)
        super().generic_visit(node)

    # --- operators ---------------------------------------------------------------------

    def visit_Compare(self, node: ast.Compare) -> None:
        if self.depth:
            left = node.left
            for op, right in zip(node.ops, node.comparators):
                token = self.find_token(_COMPARE_TOKEN, left, right)
                old, new = _COMPARE[type(op)]
                if token and re.sub(r"\s+", " ", self.text(*token)) == old:
                    self.add("flip_compare", *token, new, f"`{old}` changed to `{new}`")
                left = right
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if self.depth and type(node.op) in _BINARY and not (_is_text(node.left) or _is_text(node.right)):
            token = self.find_token(_BINARY_TOKEN, node.left, node.right)
            old, new = _BINARY[type(node.op)]
            if token and self.text(*token) == old:
                self.add("flip_operator", *token, new, f"`{old}` changed to `{new}`")
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if self.depth and type(node.op) in _BINARY and not _is_text(node.value):
            start, end = self.span(node.target)[1], self.span(node.value)[0]
            match = _AUG_TOKEN.search(self.data, start, end)
            old, new = _BINARY[type(node.op)]
            if match and match.group(1).decode() == old:
                self.add("flip_operator", match.start(), match.end(), new + "=", f"`{old}=` changed to `{new}=`")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        if self.depth:
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            for left, right in zip(node.values, node.values[1:]):
                token = self.find_token(re.compile(rb"\b(and|or)\b"), left, right)
                if token and self.text(*token) == old:
                    self.add("flip_boolean", *token, new, f"`{old}` changed to `{new}`")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if self.depth and isinstance(node.op, ast.Not):
            start = self.span(node)[0]
            match = re.match(rb"not(\s+|(?=\())", self.data[start:self.span(node.operand)[0]])
            if match:
                self.add("flip_boolean", start, start + match.end(), "", "`not` removed")
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        tricky = (ast.IfExp, ast.Lambda, ast.NamedExpr, ast.Starred)
        if self.depth and not isinstance(node.body, tricky) and not isinstance(node.orelse, tricky):
            (b0, b1), (o0, o1) = self.span(node.body), self.span(node.orelse)
            swapped = self.text(o0, o1) + self.text(b1, o0) + self.text(b0, b1)
            self.add("swap_branches", b0, o1, swapped, "conditional expression's values swapped")
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if self.depth:
            self.swap_if(node)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if not self.depth or id(node) in self.skip:
            return
        start, end = self.span(node)
        value = node.value
        if isinstance(value, bool):
            self.add("change_constant", start, end, str(not value), f"`{value}` changed to `{not value}`")
        elif isinstance(value, int):
            self.add("change_constant", start, end, str(value + 1), f"`{value}` changed to `{value + 1}`")
            if value > 0:
                self.add("change_constant", start, end, str(value - 1), f"`{value}` changed to `{value - 1}`")
        elif value == "" and self.text(start, end) in ("''", '""'):
            quote = self.text(start, start + 1)
            self.add("change_constant", start, end, f"{quote}x{quote}", "empty string changed to `'x'`")

    def visit_Slice(self, node: ast.Slice) -> None:
        if self.depth:
            for bound in (node.lower, node.upper):
                if bound is not None:
                    self.off_by_one(bound, "slice bound")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if self.depth and isinstance(node.func, ast.Name) and node.func.id == "range" and not node.keywords:
            for arg in node.args[:2]:
                if not isinstance(arg, ast.Starred):
                    self.off_by_one(arg, "range() argument")
        self.generic_visit(node)

    # --- helpers -----------------------------------------------------------------------

    def find_token(self, pattern: re.Pattern[bytes], left: ast.AST, right: ast.AST) -> tuple[int, int] | None:
        """The operator token between two operands (the gap holds only it, brackets, space, comments)."""
        start, end = self.span(left)[1], self.span(right)[0]
        gap = re.sub(rb"#[^\n]*", lambda m: b" " * len(m.group()), self.data[start:end])
        matches = list(pattern.finditer(gap))
        if len(matches) != 1:
            return None
        return start + matches[0].start(), start + matches[0].end()

    def off_by_one(self, node: ast.expr, what: str) -> None:
        whole = self.text(*self.span(node))
        sign = 1
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)) and _int_value(node.right) is not None:
            # `n - 1` becomes `n - 2` or `n - 0`, not `n - 1 + 1`
            sign = 1 if isinstance(node.op, ast.Add) else -1
            node = node.right
        start, end = self.span(node)
        number = _int_value(node)
        self.skip.add(id(node))  # change_constant would only repeat these
        if isinstance(node, ast.UnaryOp):
            self.skip.add(id(node.operand))
        for delta in (1, -1):
            if number is not None:
                new = str(number + sign * delta)
            else:
                text = self.text(start, end)
                base = text if _binds_tighter_than_plus(node) else f"({text})"
                new = f"{base} {'+' if delta > 0 else '-'} 1"
            self.add("off_by_one", start, end, new, f"{what} `{whole}` off by {'+' if delta > 0 else '-'}1")

    def visit_block(self, block: list[ast.stmt]) -> None:
        """drop_statement candidates: statements that own their lines, in a block of two or more."""
        body = [stmt for stmt in block if not _is_docstring(stmt)]
        if len(body) < 2:
            return
        for index, stmt in enumerate(block):
            if isinstance(stmt, _NEVER_DROP) or _is_docstring(stmt) or not self.owns_lines(stmt):
                continue
            if stmt.end_lineno - stmt.lineno >= _DROP_MAX_LINES:  # type: ignore[operator]
                continue  # a whole missing loop is no longer a small bug
            if index and block[index - 1].end_lineno == stmt.lineno:  # type: ignore[attr-defined]
                continue
            if index + 1 < len(block) and block[index + 1].lineno == stmt.end_lineno:
                continue
            start = self.line_starts[stmt.lineno - 1]
            end = self.line_end(stmt.end_lineno)  # type: ignore[arg-type]
            first = self.text(*self.span(stmt)).splitlines()[0].strip()
            self.add("drop_statement", start, end, "", f"statement `{_short(first)}` removed")

    def owns_lines(self, stmt: ast.stmt) -> bool:
        start, end = self.span(stmt)
        before = self.data[self.line_starts[stmt.lineno - 1]:start]
        after = self.data[end:self.line_end(stmt.end_lineno)]  # type: ignore[arg-type]
        return not before.strip() and (not after.strip() or after.strip().startswith(b"#"))

    def swap_if(self, node: ast.If) -> None:
        body, orelse = node.body, node.orelse
        if not orelse or not body:
            return
        else_line = self.data[self.line_starts[orelse[0].lineno - 1]:].lstrip()
        if else_line.startswith(b"elif"):
            return  # an elif: its own If node swaps with its else
        if body[0].lineno <= node.test.end_lineno or body[0].col_offset != orelse[0].col_offset:  # type: ignore
            return
        if not (self.owns_lines(body[0]) and self.owns_lines(body[-1])
                and self.owns_lines(orelse[0]) and self.owns_lines(orelse[-1])):
            return
        b0 = self.line_starts[body[0].lineno - 1]
        b1 = self.line_end(body[-1].end_lineno)  # type: ignore[arg-type]
        o0 = self.line_starts[orelse[0].lineno - 1]
        o1 = self.line_end(orelse[-1].end_lineno)  # type: ignore[arg-type]
        if not (b0 < b1 <= o0 < o1) or not self.data[o1 - 1:o1] == b"\n":
            return
        swapped = self.text(o0, o1) + self.text(b1, o0) + self.text(b0, b1)
        self.add("swap_branches", b0, o1, swapped, "if/else blocks swapped")


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _is_text(node: ast.expr) -> bool:
    """String operands: `'a' - b` only makes a TypeError, no interesting bug."""
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)))


def _binds_tighter_than_plus(node: ast.expr) -> bool:
    return isinstance(node, _TIGHT) or (isinstance(node, ast.BinOp) and isinstance(node.op, _TIGHT_OPS))


def _int_value(node: ast.expr) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_value(node.operand)
        return None if inner is None else -inner
    return None


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."

