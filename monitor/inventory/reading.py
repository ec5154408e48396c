"""What text an inventory may hold, and the file's bytes as that text.

Files are UTF-8 (a byte-order mark is allowed). A file saved in anything else gets an
error naming the line and saying to save it as UTF-8, never a guess: a Vietnamese name
decoded with the wrong table is stored, labelled and paged as mojibake. The legacy
encodings still met in Vietnamese offices are Windows-1258, TCVN3 (ABC) and VNI, and
"Unicode" text from Windows tools is UTF-16; none of them decodes as UTF-8 except by
chance, and the two ways text already garbled on its way in looks are caught as well.

Names and other free text are kept in NFC (the form a Vietnamese keyboard types; a name
typed in NFD on another system is the same name and must give the same metric label),
trimmed, and may hold no character that is invisible or changes how the rest displays:
control characters (C0, C1, DEL), format characters (bidi overrides and isolates such
as U+202E, zero-width space and joiners, the byte-order mark, soft hyphen), line and
paragraph separators, private-use characters and surrogates. Such a character makes
two different names look alike, or one name read differently on screen, in a log line
or in a spreadsheet than it is stored ("Trojan Source"). A name may not start with a
combining mark, which has no letter to sit on, and is at most ``MAX_NAME_CHARS`` long.
"""

from __future__ import annotations

import re
import unicodedata

from monitor.inventory.problems import ConfigError, Problem, show

MAX_NAME_CHARS = 200

_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
_SAVE_AS_UTF8 = (
    "save the file as UTF-8 (Excel: Save As, CSV UTF-8; Notepad: Save As, Encoding UTF-8; "
    "LibreOffice: Character set Unicode (UTF-8))"
)
# TCVN3 puts the commonest Vietnamese vowels (à á ả ã ạ ă â ê ô ơ ư) at 0xA8-0xBE; read as
# Latin-1 or Windows-1252 they become these symbols, right after a letter ("Hµ Néi"),
# where real text never has them.
_TCVN3_AS_LATIN1 = re.compile(r"[^\W\d_][¨ª«¬\xadµ¶·¸¹»¼½¾]")
# UTF-8 read as Windows-1252 (or Latin-1) and saved again as UTF-8: "Ã¡", "Æ°", "á»‡";
# a run of such characters that is valid UTF-8 once encoded back is never real text
_LATIN1_RUN = re.compile(r"[\x80-\xff€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ]{2,}")


def decode(raw: bytes, file: str) -> str:
    """The file's bytes as text, or a ConfigError naming the line that is not UTF-8."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _not_utf8(file, 1, "the file is saved as UTF-16 (Windows' \"Unicode\")")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        # UTF-16 without a byte-order mark: every other byte of ASCII text is zero
        sample = raw[:4096]
        if sample.count(b"\x00") * 4 >= len(sample):
            raise _not_utf8(file, line, "the file is saved as UTF-16 (Windows' \"Unicode\")")
        raise _fail(file, line, "the line holds a NUL byte, which no text has; remove it")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        why = (f"byte 0x{raw[exc.start]:02x} is not UTF-8: the file is saved in another "
               "encoding, for Vietnamese often Windows-1258, TCVN3 (ABC) or VNI")
        raise _not_utf8(file, line, why) from None
    for run in _LATIN1_RUN.finditer(text):
        if _utf8_again(run.group()):
            raise _garbled(text, run.start(), file, "UTF-8 read as Windows-1252 and saved again")
    found = _TCVN3_AS_LATIN1.search(text)
    if found:
        raise _garbled(text, found.start(), file, "TCVN3 read as Windows-1252, saved as UTF-8")
    return text


def _utf8_again(run: str) -> bool:
    for table in ("cp1252", "latin-1"):
        try:
            run.encode(table).decode("utf-8")
        except UnicodeError:
            continue
        return True
    return False


def _garbled(text: str, at: int, file: str, how: str) -> ConfigError:
    line = text.count("\n", 0, at) + 1
    start = max(text.rfind("\n", 0, at) + 1, at - 20)
    garbled = text[start:].split("\n", 1)[0]
    message = (f"the text {show(garbled)} is garbled ({how}); retype it, or convert the "
               "original file to UTF-8 once")
    return _fail(file, line, message)


def _not_utf8(file: str, line: int, why: str) -> ConfigError:
    return _fail(file, line, f"{why}; {_SAVE_AS_UTF8}")


def _fail(file: str, line: int, message: str) -> ConfigError:
    return ConfigError([Problem(file, line, "", message)])


def clean_text(text: str) -> str:
    """Free text as stored: NFC and trimmed; ValueError if it holds a refused character."""
    text = unicodedata.normalize("NFC", text.strip())
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES:
            raise ValueError(f"{show(text)} contains {_describe(char)}; remove it")
    return text


def clean_name(name: str) -> str:
    """A site's name as stored (see the module's docstring); ValueError says what is wrong."""
    name = clean_text(name)
    if not name:
        raise ValueError("the name is empty; write the site's name, e.g. UBND xã Lạc Vệ")
    if unicodedata.category(name[0]).startswith("M"):
        raise ValueError(
            f"{show(name)} starts with a combining mark ({_code(name[0])}) that has no letter "
            "to sit on; remove it or write the letter before it")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(
            f"the name is {len(name)} characters long; shorten it to {MAX_NAME_CHARS} at most")
    return name


def _code(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"


def _describe(char: str) -> str:
    category = unicodedata.category(char)
    if char in "\r\n" or category in ("Zl", "Zp"):
        kind = "a line break"
    elif category == "Cc":
        kind = "a control character"
    elif category == "Cs":
        kind = "half of a UTF-16 surrogate pair"
    elif category == "Co":
        kind = "a private-use character, which shows differently on every system"
    else:
        kind = "an invisible character that can make text display differently from how it is stored"
    return f"{kind} ({_code(char)})"
