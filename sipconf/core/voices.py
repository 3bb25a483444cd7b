"""Speak voices by Plivo's names, mapped to the closest local espeak-ng voice.

Plivo apps name voices ``WOMAN``/``MAN`` (with ``language``) or Amazon Polly voices
(``Polly.Joanna``, ``Polly.Matthew-Neural``, ...), each of which has one language and gender.
The node speaks with espeak-ng, so each name becomes an espeak-ng language voice plus a female
or male variant (``en-us+f3``). Sans-I/O: a name and a language in, a :class:`Voice` out, never
an error (an unknown name falls back to the language's woman's voice, and says so in ``note``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("sipconf.sounds")

FEMALE, MALE = "+f3", "+m3"
DEFAULT_LANG = "en-us"

# Plivo language tag (lower case) -> the espeak-ng voice that speaks it (espeak-ng 1.51's list)
LANGUAGES = {
    "en-us": "en-us", "en-gb": "en-gb", "en-au": "en-gb", "en-in": "en-gb", "en-nz": "en-gb",
    "en-za": "en-gb", "en-ie": "en-gb", "en-gb-wls": "en-gb", "en-ca": "en-us",
    "es-es": "es", "es-mx": "es-419", "es-us": "es-419", "fr-fr": "fr-fr", "fr-ca": "fr-fr",
    "fr-be": "fr-be", "fr-ch": "fr-ch", "de-de": "de", "de-at": "de", "it-it": "it",
    "pt-br": "pt-br", "pt-pt": "pt", "nl-nl": "nl", "nl-be": "nl", "da-dk": "da", "nb-no": "nb",
    "sv-se": "sv", "pl-pl": "pl", "ro-ro": "ro", "ru-ru": "ru", "tr-tr": "tr", "is-is": "is",
    "cy-gb": "cy", "ja-jp": "ja", "ko-kr": "ko", "cmn-cn": "cmn", "zh-cn": "cmn", "yue-cn": "yue",
    "arb": "ar", "ar-ae": "ar", "hi-in": "hi", "fi-fi": "fi", "cs-cz": "cs", "el-gr": "el",
    "hu-hu": "hu", "id-id": "id", "uk-ua": "uk", "vi-vn": "vi", "th-th": "th", "he-il": "he",
}
# primary subtags espeak-ng has a voice for (a tag not in LANGUAGES falls back to these)
PRIMARY = frozenset({
    "af", "ar", "bg", "bn", "ca", "cmn", "cs", "cy", "da", "de", "el", "en", "es", "et", "eu",
    "fa", "fi", "ga", "gu", "he", "hi", "hr", "hu", "hy", "id", "is", "it", "ja", "ka", "kn",
    "ko", "lt", "lv", "mk", "ml", "mr", "ms", "nb", "ne", "nl", "pa", "pl", "pt", "ro", "ru",
    "sk", "sl", "sq", "sr", "sv", "sw", "ta", "te", "th", "tr", "uk", "ur", "vi", "yue"})
PRIMARY_VOICE = {"en": "en-us", "fr": "fr-fr", "zh": "cmn", "no": "nb"}

# Polly voice -> (gender variant, Plivo language)
POLLY = {
    **{n: (FEMALE, "en-us") for n in ("joanna", "ivy", "kendra", "kimberly", "salli", "ruth",
                                      "danielle")},
    **{n: (MALE, "en-us") for n in ("matthew", "joey", "justin", "kevin", "stephen",
                                    "gregory")},
    **{n: (FEMALE, "en-gb") for n in ("amy", "emma", "arthur_f")},
    "brian": (MALE, "en-gb"), "arthur": (MALE, "en-gb"), "geraint": (MALE, "en-gb-wls"),
    "nicole": (FEMALE, "en-au"), "olivia": (FEMALE, "en-au"), "russell": (MALE, "en-au"),
    "aditi": (FEMALE, "en-in"), "raveena": (FEMALE, "en-in"), "kajal": (FEMALE, "en-in"),
    "aria": (FEMALE, "en-nz"), "ayanda": (FEMALE, "en-za"), "niamh": (FEMALE, "en-ie"),
    "celine": (FEMALE, "fr-fr"), "céline": (FEMALE, "fr-fr"), "lea": (FEMALE, "fr-fr"),
    "léa": (FEMALE, "fr-fr"), "mathieu": (MALE, "fr-fr"), "remi": (MALE, "fr-fr"),
    "chantal": (FEMALE, "fr-ca"), "gabrielle": (FEMALE, "fr-ca"), "liam": (MALE, "fr-ca"),
    "marlene": (FEMALE, "de-de"), "vicki": (FEMALE, "de-de"), "hans": (MALE, "de-de"),
    "daniel": (MALE, "de-de"), "hannah": (FEMALE, "de-at"),
    "conchita": (FEMALE, "es-es"), "lucia": (FEMALE, "es-es"), "enrique": (MALE, "es-es"),
    "sergio": (MALE, "es-es"), "mia": (FEMALE, "es-mx"), "andres": (MALE, "es-mx"),
    "lupe": (FEMALE, "es-us"), "penelope": (FEMALE, "es-us"), "miguel": (MALE, "es-us"),
    "pedro": (MALE, "es-us"),
    "carla": (FEMALE, "it-it"), "bianca": (FEMALE, "it-it"), "giorgio": (MALE, "it-it"),
    "adriano": (MALE, "it-it"),
    "camila": (FEMALE, "pt-br"), "vitoria": (FEMALE, "pt-br"), "vitória": (FEMALE, "pt-br"),
    "ricardo": (MALE, "pt-br"), "thiago": (MALE, "pt-br"), "ines": (FEMALE, "pt-pt"),
    "inês": (FEMALE, "pt-pt"), "cristiano": (MALE, "pt-pt"),
    "lotte": (FEMALE, "nl-nl"), "laura": (FEMALE, "nl-nl"), "ruben": (MALE, "nl-nl"),
    "naja": (FEMALE, "da-dk"), "sofie": (FEMALE, "da-dk"), "mads": (MALE, "da-dk"),
    "liv": (FEMALE, "nb-no"), "ida": (FEMALE, "nb-no"), "astrid": (FEMALE, "sv-se"),
    "elin": (FEMALE, "sv-se"), "ewa": (FEMALE, "pl-pl"), "maja": (FEMALE, "pl-pl"),
    "jacek": (MALE, "pl-pl"), "jan": (MALE, "pl-pl"), "ola": (FEMALE, "pl-pl"),
    "carmen": (FEMALE, "ro-ro"), "tatyana": (FEMALE, "ru-ru"), "maxim": (MALE, "ru-ru"),
    "filiz": (FEMALE, "tr-tr"), "burcu": (FEMALE, "tr-tr"), "dora": (FEMALE, "is-is"),
    "karl": (MALE, "is-is"), "gwyneth": (FEMALE, "cy-gb"), "mizuki": (FEMALE, "ja-jp"),
    "takumi": (MALE, "ja-jp"), "kazuha": (FEMALE, "ja-jp"), "tomoko": (FEMALE, "ja-jp"),
    "seoyeon": (FEMALE, "ko-kr"), "zhiyu": (FEMALE, "cmn-cn"), "zeina": (FEMALE, "arb"),
    "hala": (FEMALE, "ar-ae"), "zayd": (MALE, "ar-ae"), "suvi": (FEMALE, "fi-fi"),
}


@dataclass(frozen=True)
class Voice:
    espeak: str  # what goes to espeak-ng -v, e.g. "en-us+f3"
    note: str | None = None  # how the name was mapped, when it was not exact


def language_voice(language: str) -> tuple[str, bool]:
    """The espeak-ng voice for a Plivo language tag, and whether it had one of its own."""
    tag = language.strip().lower().replace("_", "-")
    if tag in LANGUAGES:
        return LANGUAGES[tag], True
    primary = tag.split("-", 1)[0]
    if primary in PRIMARY_VOICE:
        return PRIMARY_VOICE[primary], False
    if primary in PRIMARY:
        return primary, False
    return DEFAULT_LANG, False


def resolve(voice: str, language: str = "en-US") -> Voice:
    """The espeak-ng voice for a Speak's ``voice`` and ``language``."""
    name = voice.strip()
    key = name.lower()
    if key in ("woman", "man", ""):
        lang, exact = language_voice(language)
        variant = MALE if key == "man" else FEMALE
        note = None if exact else f"language {language!r} spoken as espeak-ng {lang}"
        return Voice(lang + variant, note)
    if key.startswith("polly."):
        base = key[len("polly."):]
        for suffix in ("-neural", "-generative", "-standard", "-long-form"):
            base = base.removesuffix(suffix)
        if base in POLLY:
            variant, plang = POLLY[base]
            lang, _ = language_voice(plang)
            return Voice(lang + variant, f"{name} ({plang}) spoken as espeak-ng {lang}{variant}")
    lang, _ = language_voice(language)
    return Voice(lang + FEMALE, f"voice {name!r} unknown here: spoken as espeak-ng "
                                f"{lang}{FEMALE} (language {language!r})")


_noted: set[tuple[str, str]] = set()
MAX_NOTED = 1000  # distinct (voice, language) pairs logged; past it, no more notes


def espeak_voice(voice: str, language: str = "en-US") -> str:
    """:func:`resolve`'s espeak-ng voice; how a name was mapped is logged once per name."""
    v = resolve(voice, language)
    key = (voice, language)
    if v.note and key not in _noted and len(_noted) < MAX_NOTED:
        _noted.add(key)
        log.info("Speak voice mapping: %s", v.note)
    return v.espeak
