"""Tables, written one way: aligned text for a terminal, Markdown for a report."""


def text_table(header, rows, right=(), rule=False, last_free=False):
    """Columns padded to their widest cell; the columns in `right` right-aligned (numbers);
    with rule, a line of dashes under the header; with last_free, the last column is not padded
    (a long verdict)."""
    rows = [[str(c) for c in row] for row in rows]
    header = [str(c) for c in header]
    table = [header] + ([["-" * len(h) for h in header]] if rule else []) + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    if rule:
        table[1] = ["-" * w for w in widths]
    lines = []
    for row in table:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        if last_free:
            cells[-1] = row[-1]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def markdown_table(header, rows):
    """A Markdown table: a header row, its separator, one line per row."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"
    return [line(header), line("---" for _ in header)] + [line(row) for row in rows]
