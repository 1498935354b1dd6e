"""`coralfs --help` (and `coralfs` alone) drawn from coralfs/cli/catalog.py with rich's
console, table and panel only: the same look, byte for byte, as typer's rich help of the
whole command tree (tests/cli/test_root_help.py compares both), without importing typer,
its rich_utils (which imports rich's markdown, markdown_it and traceback) or any command
module. `coralfs CMD --help` is still typer's."""

from __future__ import annotations

import os
from collections.abc import Sequence

from . import catalog

# The root options that take a value, and the root flags (coralfs/cli/app.py).
ROOT_VALUE_OPTIONS = frozenset({"-R", "--repo", "-c", "--config"})
ROOT_FLAGS = frozenset({"-v", "--verbose"})
HELP_OPTIONS = frozenset({"-h", "--help"})


def exit_code_of(args: Sequence[str]) -> int | None:
    """The exit code when ``args`` ask for the root help and nothing else: 0 for `-h` or
    `--help` after root options only, 2 for no arguments (typer's no_args_is_help, a usage
    error); None for everything else, which typer handles (a command, an unknown option, a
    missing option value, shell completion, typer's plain help under TYPER_USE_RICH)."""
    if "_CORALFS_COMPLETE" in os.environ or "TYPER_USE_RICH" in os.environ:
        return None
    if not args:
        return 2
    wants = False
    i = 0
    while i < len(args):
        a = args[i]
        if a in ROOT_VALUE_OPTIONS and i + 1 < len(args):
            i += 2
            continue
        if a in HELP_OPTIONS:
            wants = True
        elif not (a in ROOT_FLAGS or a.startswith(("--repo=", "--config="))):
            return None
        i += 1
    return 0 if wants else None


def show(blank_line: bool) -> None:
    """Print the root help to stdout as typer's rich_utils.rich_format_help does (its
    console settings and styles, kept equal by the test); ``blank_line`` ends it with the
    empty line click adds after `--help` (not after no arguments)."""
    from rich.align import Align
    from rich.columns import Columns
    from rich.console import Console, Group
    from rich.highlighter import RegexHighlighter
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text
    from rich.theme import Theme

    class OptionHighlighter(RegexHighlighter):
        highlights = [
            r"(^|\W)(?P<switch>\-\w+)(?![a-zA-Z0-9])",
            r"(^|\W)(?P<option>\-\-[\w\-]+)(?![a-zA-Z0-9])",
            r"(?P<types>\<[^\>]+\>)",
            r"(?P<usage>Usage: )",
        ]

    class NegativeOptionHighlighter(RegexHighlighter):
        highlights = [
            r"(^|\W)(?P<negative_switch>\-\w+)(?![a-zA-Z0-9])",
            r"(^|\W)(?P<negative_option>\-\-[\w\-]+)(?![a-zA-Z0-9])",
        ]

    class TypesHighlighter(RegexHighlighter):
        highlights = [
            r"^(?P<types_sep>(\[|<))",
            r"(?P<types_sep>\|)",
            r"(?P<types_sep>(\]|>))(\.\.\.)?$",
        ]

    highlighter = OptionHighlighter()
    negative, types = NegativeOptionHighlighter(), TypesHighlighter()
    # typer reads these when rich_utils is imported; here when the help is drawn.
    force_terminal = True if os.getenv("GITHUB_ACTIONS") or os.getenv("FORCE_COLOR") or os.getenv("PY_COLORS") else None
    if os.getenv("_TYPER_FORCE_DISABLE_TERMINAL"):
        force_terminal = False
    width = os.getenv("TERMINAL_WIDTH")
    console = Console(
        theme=Theme({"option": "bold cyan", "switch": "bold green", "negative_option": "bold magenta",
                     "negative_switch": "bold red", "types": "bold yellow", "types_sep": "dim",
                     "usage": "yellow"}),
        highlighter=highlighter, color_system="auto", force_terminal=force_terminal,
        width=int(width) if width else None)

    console.print(Padding(highlighter(catalog.USAGE), 1), style="bold")
    console.print(Padding(Align(Group(highlighter(Text.from_markup(catalog.HELP))), pad=False), (0, 1, 1, 1)))

    table_style = {"show_header": False, "expand": True, "box": None, "show_lines": False, "leading": 0,
                   "border_style": None, "row_styles": None, "pad_edge": False, "padding": (0, 1)}
    options = Table(highlight=True, **table_style)
    for long, short, type_, help_ in catalog.OPTIONS:
        options.add_row(highlighter(long), highlighter(short), negative(""), negative(""),
                        types(Text(type_, style="bold yellow", overflow="fold")),
                        Columns([highlighter(Text.from_markup(help_))]))
    console.print(Panel(options, border_style="dim", title="Options", title_align="left"))

    panels: dict[str, list[tuple[str, str]]] = {}
    for name, panel, help_ in catalog.COMMANDS:
        panels.setdefault(panel, []).append((name, help_))
    width_of_names = max(len(name) for name, _, _ in catalog.COMMANDS)
    for panel, rows in panels.items():
        table = Table(highlight=False, **table_style)
        table.add_column(style="bold cyan", no_wrap=True, width=width_of_names)
        table.add_column("Description", justify="left", no_wrap=False, ratio=10)
        for name, help_ in rows:
            table.add_row(Text(name), highlighter(Text.from_markup(help_)))
        console.print(Panel(table, border_style="dim", title=panel, title_align="left"))
    if blank_line:
        console.file.write("\n")
