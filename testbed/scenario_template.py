"""Renders a scenario template: jinja2's immutable sandbox, in a forked child with bounded time,
memory, output and recursion, so that a scenario file (data, run by CI from pull requests) can
neither run code on the host nor hang or exhaust it.

The child also has no file descriptor to spare (so it can open nothing, not even a pipe, and what it
would exec could not either), may not grow files and, unless it is root, not fork: should the
sandbox ever leak, the child still could not touch anything. It sends back the text or a typed
error."""

from __future__ import annotations

import contextlib
import encodings.unicode_escape  # noqa: F401  (see _PRELOADED)
import faulthandler
import html  # noqa: F401  (see _PRELOADED)
import json
import os
import pprint  # noqa: F401  (see _PRELOADED)
import resource
import select
import signal
import textwrap  # noqa: F401  (see _PRELOADED)
import time
import warnings
from typing import Any, NoReturn

import jinja2
from jinja2 import constants, debug, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_OUTPUT_CHARS = 1 << 20        # the rendered text
RENDER_TIMEOUT_S = 1.0            # wall clock, for the whole render
CHILD_CPU_S = 2                   # a backstop for the wall clock
CHILD_EXTRA_MEMORY = 512 << 20    # address space the child may add to what it inherited
MAX_INT_BITS = 1 << 16            # results of * and ** on integers
_ERROR_BYTES = 64 << 10


class TemplateRefused(Exception):
    """Why a template did not render: key is 'line N' or 'template', reason is for the user."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


class ScenarioSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox, plus bounds on the operators that build huge values at once."""
    intercepted_binops = frozenset({"*", "**", "+"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        ints = all(isinstance(v, int) for v in (left, right))
        if operator == "*":
            sizes = [_size(left), _size(right)]
            count = right if sizes[0] is not None else left
            if any(s is not None for s in sizes) and isinstance(count, int):
                if max(s or 0 for s in sizes) * max(count, 0) > MAX_OUTPUT_CHARS:
                    raise SecurityError(f"refused: '*' would build a value longer than {MAX_OUTPUT_CHARS}")
            elif ints and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
                raise SecurityError(f"refused: '*' would build an integer of more than {MAX_INT_BITS} bits")
        elif operator == "**" and ints and right > 0 and abs(left) > 1:
            if abs(left).bit_length() * right > MAX_INT_BITS:
                raise SecurityError(f"refused: '**' would build an integer of more than {MAX_INT_BITS} bits")
        elif operator == "+":
            sizes = [_size(left), _size(right)]
            if None not in sizes and sum(sizes) > MAX_OUTPUT_CHARS:  # type: ignore[arg-type]
                raise SecurityError(f"refused: '+' would build a value longer than {MAX_OUTPUT_CHARS}")
        return super().call_binop(context, operator, left, right)


# The child cannot open files, so nothing may be imported lazily there. jinja imports these on use:
# the codec for string literals, debug on any error, constants for lipsum(), textwrap for wordwrap,
# pprint for pprint, html for striptags. (tests/test_malformed_scenarios.py renders every filter,
# test and global in the child, so an import added by a newer jinja shows up there.)
_PRELOADED = (encodings.unicode_escape, debug, constants, textwrap, pprint, html)

_ENV = ScenarioSandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_FILE_NODES = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from ... import",
               nodes.Extends: "extends"}


def _template_line(exc: BaseException) -> int | None:
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render(source: str, variables: dict[str, Any]) -> str:
    """In the child: parse, refuse file access, render with a bound on the output."""
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateRefused(f"line {e.lineno}", f"template syntax: {e.message}") from None
    node = next(tree.find_all(tuple(_FILE_NODES)), None)
    if node is not None:
        raise TemplateRefused(f"line {node.lineno}", f"{{% {_FILE_NODES[type(node)]} %}} is not allowed: a scenario "
                              "template cannot read other files (pass values with --set NAME=VALUE)")
    template = _ENV.from_string(tree)
    out: list[str] = []
    size = 0
    for chunk in template.generate(**variables):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise TemplateRefused("template", f"the rendered text is longer than {MAX_OUTPUT_CHARS} characters")
        out.append(chunk)
    return "".join(out)


def _explain(e: BaseException) -> tuple[str, str]:
    if isinstance(e, TemplateRefused):
        return e.key, e.reason
    line = _template_line(e)
    key = f"line {line}" if line else "template"
    if isinstance(e, jinja2.TemplateSyntaxError):
        return f"line {e.lineno}", f"template syntax: {e.message}"
    if isinstance(e, jinja2.UndefinedError):
        hint = " (set it with --set NAME=VALUE)" if str(e.message).endswith("is undefined") else ""
        return key, f"{e.message}{hint}"
    if isinstance(e, SecurityError):
        return key, f"unsafe template operation: {e}"
    if isinstance(e, RecursionError):
        return key, "the template nests or recurses too deeply (a macro calling itself?)"
    if isinstance(e, MemoryError):
        return key, f"the template needs more than {CHILD_EXTRA_MEMORY >> 20} MiB of memory"
    return key, f"template error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"


def _limit_child() -> None:
    """Default signal handling (the parent's handlers are the parent's business), no fault handler
    writing to a terminal, and the limits. Each is best effort: the wall clock still holds."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_DFL)
    if faulthandler.is_enabled():
        faulthandler.disable()
    limits = [(resource.RLIMIT_CPU, CHILD_CPU_S), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NPROC, 0)]
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm") as f:
        vsize = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limits.append((resource.RLIMIT_AS, vsize + CHILD_EXTRA_MEMORY))
    limits.append((resource.RLIMIT_NOFILE, 4))  # fds 0-3 are taken: nothing can be opened
    for which, value in limits:
        with contextlib.suppress(OSError, ValueError):
            _, hard = resource.getrlimit(which)
            new_hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU first, then SIGKILL
            if hard != resource.RLIM_INFINITY:
                value, new_hard = min(value, hard), min(new_hard, hard)
            resource.setrlimit(which, (value, new_hard))


def _child(write_fd: int, source: str, variables: dict[str, Any]) -> NoReturn:
    """Renders and writes one answer to fd 3: a kind (O: text, E: error as JSON), the payload's
    length (8 bytes) and the payload. An answer is whole or it is not one."""
    status = 70
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.dup2(write_fd, 3)
        os.closerange(4, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 65536)
        _limit_child()
        try:
            kind, payload = b"O", _render(source, variables).encode("utf-8")
        except Exception as e:  # every failure becomes a typed answer
            key, reason = _explain(e)
            kind, payload = b"E", json.dumps({"key": key, "reason": reason}).encode()
        view = memoryview(kind + len(payload).to_bytes(8, "big") + payload)
        while view:
            view = view[os.write(3, view):]
        status = 0
    except BaseException:
        pass
    os._exit(status)


def render_template(source: str, variables: dict[str, Any] | None = None,
                    timeout_s: float | None = None) -> str:
    """The rendered text, or TemplateRefused saying why not."""
    timeout_s = RENDER_TIMEOUT_S if timeout_s is None else timeout_s
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the child only renders
        pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(write_fd, source, variables or {})
    os.close(write_fd)
    reaped, status = False, 0
    try:
        data = _read_all(read_fd, time.monotonic() + timeout_s, timeout_s)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # SIGCHLD ignored: the answer's framing still tells
            pass
        reaped = True
    finally:
        os.close(read_fd)
        if not reaped:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    kind, payload = data[:1], data[9:]
    if kind in (b"O", b"E") and int.from_bytes(data[1:9], "big") == len(payload):
        if kind == b"O":
            return payload.decode("utf-8")
        answer = json.loads(payload)
        raise TemplateRefused(answer["key"], answer["reason"])
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
        raise TemplateRefused("template", f"rendering used more than {CHILD_CPU_S} s of CPU")
    how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"status {os.WEXITSTATUS(status)}"
    raise TemplateRefused("template", f"rendering failed ({how}); the template nests, recurses or allocates "
                          "too much")


def _read_all(fd: int, deadline: float, timeout_s: float) -> bytes:
    chunks, total = [], 0
    limit = 4 * MAX_OUTPUT_CHARS + _ERROR_BYTES  # UTF-8 takes up to 4 bytes a character
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TemplateRefused("template", f"rendering took longer than {timeout_s:g} s (a loop too long?)")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise TemplateRefused("template", f"the rendered text is longer than {MAX_OUTPUT_CHARS} characters")
        chunks.append(chunk)


# The lexer's regexes and the code generator are built on first use; doing that here, once, keeps
# each child from doing it again (about 3 ms a render).
_render("{% set a = b | default(1) %}{% if a %}{{ a ~ 'x' }}{% endif %}{% for i in range(2) %}{% endfor %}", {})
