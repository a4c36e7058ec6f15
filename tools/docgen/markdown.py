"""The Markdown of this repository (README, ``table.md``, ``bench/results.md``) as reStructuredText.

Only what those files use: ATX headings, fenced code blocks, pipe tables,
bullet lists, paragraphs, and inline code, bold, italics, links and images.
Tables become ``list-table`` directives, so cells may be as long as they like.
"""
import re

__all__ = ["inline", "to_rst", "section", "table_rows"]

_CODE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"(!?)\[([^\]]+)\]\(([^)\s]+)\)")


def inline(text, link=None):
    """One line of Markdown inline markup as reStructuredText.

    ``link(url)`` may rewrite link targets (``None`` drops the link and
    keeps its text). Code spans are protected from the other rules.

    >>> inline("run `make docs`, then **look** at [the site](docs/index.html)")
    'run ``make docs``, then **look** at `the site <docs/index.html>`__'
    """
    parts = []

    def keep(m):
        parts.append(f"``{m.group(1)}``" if m.group(1).strip() else m.group(0))
        return f"\x00{len(parts) - 1}\x01"

    text = _CODE.sub(keep, text)
    text = text.replace("|", "\\|")  # a substitution reference in reStructuredText
    text = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)  # ``name_`` would be a hyperlink reference

    def to_link(m):
        bang, label, url = m.groups()
        url = link(url) if link else url
        if bang:  # an image inside a paragraph: keep its alt text
            return label
        return label if url is None else f"`{label} <{url}>`__"

    text = _LINK.sub(to_link, text)
    # inline markup must be set off by space or punctuation; "\ " is an escaped nothing
    text = re.sub(r"(?<=\w)\x00", "\\\\ \x00", text)
    text = re.sub(r"\x01(?=\w)", "\x01\\\\ ", text)
    return re.sub("\x00(\\d+)\x01", lambda m: parts[int(m.group(1))], text)


def table_rows(lines):
    """The cells of a Markdown pipe table's lines (header first, the ``---`` line dropped)."""
    rows = []
    for line in lines:
        body = line.strip().strip("|")
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]
        if all(re.fullmatch(r":?-{3,}:?", c) for c in cells if c):
            continue
        rows.append(cells)
    return rows


def list_table(rows, link=None, indent="", widths=None):
    """reStructuredText ``list-table`` lines of ``rows`` (the first is the header)."""
    n = max(len(r) for r in rows)
    out = [f"{indent}.. list-table::", f"{indent}   :header-rows: 1", f"{indent}   :class: generated-table"]
    if widths:
        out.append(f"{indent}   :widths: {' '.join(str(w) for w in widths)}")
    out.append("")
    for row in rows:
        row = row + [""] * (n - len(row))
        for j, cell in enumerate(row):
            text = inline(cell, link) if cell else ""
            out.append(f"{indent}   {'* -' if j == 0 else '  -'} {text}".rstrip())
    return out + [""]


def _heading(text, level, link):
    chars = {1: "=", 2: "-", 3: "~", 4: "^"}
    title = inline(text, link)
    return [title, chars.get(level, "^") * len(title), ""]


def to_rst(markdown, link=None, top=1):
    """Markdown text as reStructuredText; a ``#`` heading becomes level ``top`` (``=`` underlines)."""
    lines = markdown.splitlines()
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^(\s*)```(\w*)", line)
        if fence:
            body, i = [], i + 1
            while i < len(lines) and not lines[i].lstrip().startswith("```"):
                body.append(lines[i])
                i += 1
            out += [f".. code-block:: {fence.group(2) or 'text'}", ""] + [f"   {b}" for b in body] + [""]
            i += 1
            continue
        head = re.match(r"^(#{1,6})\s+(.*)$", line)
        if head:
            out += _heading(head.group(2).strip(), len(head.group(1)) - 1 + top, link)
        elif line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            out += list_table(table_rows(block), link)
            continue
        elif re.match(r"^\s*<!--.*-->\s*$", line):
            pass
        elif re.match(r"^\s*[-*] ", line):
            item = [re.sub(r"^\s*[-*] ", "", line)]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                i += 1
                item.append(lines[i].strip())
            out += [f"- {inline(' '.join(item), link)}"]
            if i + 1 < len(lines) and not re.match(r"^\s*[-*] ", lines[i + 1]):
                out.append("")
        elif not line.strip():
            out.append("")
        else:
            para = [line.strip()]
            while i + 1 < len(lines) and lines[i + 1].strip() and not re.match(r"^(#|\s*\||\s*```|\s*[-*] )",
                                                                                 lines[i + 1]):
                i += 1
                para.append(lines[i].strip())
            out += [inline(" ".join(para), link), ""]
        i += 1
    return "\n".join(_squeeze(out)) + "\n"


def _squeeze(lines):
    """No two blank lines in a row, none at the start."""
    out = []
    for line in lines:
        if not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line)
    return out


def section(markdown, title):
    """The body of the ``##`` section called ``title`` (up to the next heading of its level or above)."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        head = re.match(r"^(#{1,6})\s+(.*)$", line)
        if head and head.group(2).strip() == title:
            level, body = len(head.group(1)), []
            for rest in lines[i + 1:]:
                other = re.match(r"^(#{1,6})\s", rest)
                if other and len(other.group(1)) <= level:
                    break
                body.append(rest)
            return "\n".join(body).strip() + "\n"
    raise ValueError(f"title: no section {title!r} in the Markdown")
