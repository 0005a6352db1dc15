"""Internationalised names: decode IDNA (`xn--` labels) and tell look-alikes of ASCII names apart.

A log carries names as the client asked for them: punycode (`xn--pypal-4ve.com`) or, from some
log paths, raw Unicode (`pаypal.com` with a Cyrillic `а`). Both forms are decoded to Unicode and
mapped to a *skeleton* (NFKC, then confusable characters to their Latin look-alike). A name whose
skeleton is plain ASCII and differs from its Unicode form is a look-alike of that skeleton; any
other internationalised name is still never proposed automatically (it needs a human reading both
forms). Python runs only over the distinct names that contain `xn--` or a non-ASCII character.
"""

from __future__ import annotations

import unicodedata

# Characters from other scripts (and Latin extensions) drawn like a Latin letter or digit.
_CONFUSABLE = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k", "ӏ": "l",
    "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "ь": "b", "ү": "y", "ɡ": "g",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
    # Latin look-alikes and digits
    "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ŀ": "l", "ɩ": "i", "ɑ": "a", "ʀ": "r", "ʏ": "y",
    "ⅰ": "i", "ℓ": "l", "０": "0", "１": "1",
    # Armenian, Cherokee
    "օ": "o", "ս": "u", "զ": "q", "ց": "g", "Ꭺ": "a", "Ꮃ": "w",
}


def to_unicode(name: str) -> str | None:
    """The Unicode form of a name (each `xn--` label decoded); None when a label does not decode."""
    out = []
    for label in name.split("."):
        if label.startswith("xn--"):
            try:
                label = label.encode("ascii").decode("idna")
            except UnicodeError:
                return None
        out.append(label)
    return ".".join(out)


def skeleton(text: str) -> str:
    """NFKC, invisible format characters dropped, confusables to Latin: what the name looks like to a reader
    (accented Latin letters stay: `münchen` is an internationalised name, not a look-alike)."""
    t = unicodedata.normalize("NFKC", text).lower()
    return "".join(_CONFUSABLE.get(c, c) for c in t if unicodedata.category(c) != "Cf")


def classify(name: str) -> dict | None:
    """For an internationalised name: {name, unicode, looks_like, kind, detail}; None for plain ASCII names."""
    if name.isascii() and "xn--" not in name:
        return None
    uni = to_unicode(name) if name.isascii() else name
    if uni is None:
        return {"name": name, "unicode": None, "looks_like": None, "kind": "lookalike",
                "detail": "punycode label that does not decode: never proposed"}
    sk = skeleton(uni)
    if sk.isascii() and sk != uni:
        return {"name": name, "unicode": uni, "looks_like": sk, "kind": "lookalike",
                "detail": f"look-alike of {sk} (Unicode form {uni!r}, as logged {name!r})"}
    return {"name": name, "unicode": uni, "looks_like": None, "kind": "idn",
            "detail": f"internationalised name (Unicode form {uni!r}, as logged {name!r}): review both forms by hand"}
