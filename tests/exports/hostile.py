"""Names that break naive writers of every format, shared by the export tests."""

from __future__ import annotations

HOSTILE_NAMES: list[str | None] = [
    "Doe, Jane",
    'Ann "Nancy" O\'Neil',
    "Line one\nline two",
    "Carriage\rreturn",
    "Windows\r\nbreak",
    "Zoë Ærøskøbing",
    "مستخدم تجريبي",  # right-to-left
    "\u202eevil\u202c override",
    "用户 🚀👩‍👩‍👧",
    "=1+1",
    "+SUM(A1:A2)",
    "-2+3",
    "@cmd",
    "\tTabbed",
    "\rLeading CR",
    '=HYPERLINK("http://example.com","x")',
    "",
    None,
    "   spaced   ",
    "trailing comma,",
    '"',
    "''already quoted",
    "back\\slash",
    # Aimed at the PostgreSQL path, which ends records by rewriting `,"<CR>"<LF>`
    # and relies on COPY's quoting: none of these may be mistaken for a record end.
    'x,"\r"\n',
    '"\r"',
    "ends in CR\r",
    "ends in LF\n",
    "\\.",
]

# Characters XML 1.0 cannot hold (removed from XLSX text), and text that XML
# and JSON must escape.
MARKUP_NAMES: list[str | None] = [
    "ctl\x01\x02\x08 \x0b\x0c\x0e\x1f end",
    "nonchars \ufffe\uffff end",
    "\x01\x1f",  # nothing left: an empty string
    "<b>bold</b> & &amp; &#13;",
    "a]]>b",
    " leading and trailing spaces ",
    "\ttab first",
    'quote " and slash / and backslash \\',
    "100% sure: %s %d %% %.0s",  # printf conversions, where SQL formats with printf
]
