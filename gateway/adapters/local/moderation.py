"""Rule-based moderation with OpenAI's category names.

A small phrase list, not a classifier: it catches explicit threats, self-harm, sexual content
involving minors, dehumanising or violent talk about groups, graphic violence and requests
for dangerous instructions, and stays quiet on technical uses of the same words ("kill the
process", "the shooting schedule"). Rules match phrases rather than single words for that
reason. Text is normalised first so that simple obfuscation ("k1ll", "k i l l", "kiiill")
does not slip through.
"""

from __future__ import annotations

import re
import unicodedata

from gateway.adapters.base import ModerationCall, ModerationOutput
from gateway.adapters.local.slot import ModelSlot

CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
    "illicit",
    "illicit/violent",
)

# --- normalisation ---------------------------------------------------------------------------

_LEET = str.maketrans({"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
_SYMBOL = "0-9@$!|"  # characters that may stand for letters
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
# Three or more single characters separated by one or two of " .-_*": "k i l l", "k.i.l.l".
_SPACED = re.compile(rf"(?<![a-z{_SYMBOL}])(?:[a-z{_SYMBOL}][ .\-_*]{{1,2}}){{2,}}[a-z{_SYMBOL}](?![a-z{_SYMBOL}])")
_SEPARATORS = re.compile(r"[ .\-_*]")
_TOKEN = re.compile(r"\S+")
_NON_LETTERS = re.compile(r"[^a-z]+")
_REPEATS = re.compile(r"([a-z])\1+")


def normalise(text: str, one: str = "i") -> str:
    """Lower-case letters a-z separated by single spaces, with obfuscation undone.

    ``one`` is what "1" and "|" stand for ("i" or "l"); callers try both when either occurs.
    Every run of a repeated letter becomes one letter ("kiiill" -> "kil"); the rules are
    written in plain spelling and collapsed the same way, so "kill" still matches "kill".
    """
    text = unicodedata.normalize("NFKC", text).lower()
    # Strip accents and invisible format characters (zero-width spaces inside words).
    text = "".join(
        ch
        for ch in unicodedata.normalize("NFKD", text)
        if not unicodedata.combining(ch) and unicodedata.category(ch) != "Cf"
    )
    text = text.translate(_APOSTROPHES).replace("'", "")  # "i'll" -> "ill", "you're" -> "youre"
    text = _SPACED.sub(lambda m: _SEPARATORS.sub("", m.group(0)), text)
    text = _TOKEN.sub(lambda m: _unleet(m.group(0), one), text)
    text = _NON_LETTERS.sub(" ", text)
    return _REPEATS.sub(r"\1", text).strip()


def _unleet(token: str, one: str) -> str:
    # Only inside words: "3 apples" and "$100" keep their digits (which then drop out), and
    # a closing "!" is punctuation, not an "i".
    core = token.rstrip("!?.,;:")
    if not any("a" <= ch <= "z" for ch in core):
        return token
    return core.translate(_LEET).replace("1", one).replace("|", one) + token[len(core) :]


# --- rules -----------------------------------------------------------------------------------
# Sources are regexes over normalised text in plain spelling, with " " between words (which
# also matches no space, for "killyourself"). Use only letters, spaces and (?:...|...)?* groups:
# repeated letters are collapsed in the source as in the text.

_YOU = "(?:you|u|ya|yall|you all|your family|your kids|your wife|your children)"
_THIRD = "(?:him|her|them)"
_I_WILL = (
    "(?:i will|ill|i shall|i am going to|im going to|i am gonna|im gonna|imma|ima|i gonna|i wanna|i want to"
    "|we will|we are going to|were going to|were gonna|we gonna)"
)
# Verbs that are a threat with a person as object. Not "shoot" ("I'll shoot you an email"),
# "hang" or "burn" ("I'll burn you a copy"): those have rules with an explicit continuation.
_HARM = "(?:kill|murder|stab|strangle|choke|slaughter|behead|butcher|rape|hurt)"
_GROUPS = (
    "(?:jews|jewish people|muslims|christians|blacks|black people|whites|white people|gays|gay people"
    "|lesbians|trans people|transgender people|immigrants|refugees|mexicans|arabs|asians|africans"
    "|hindus|sikhs|women|men|disabled people|roma|gypsies)"
)
_DIE = "(?:die|be killed|be shot|be hanged|be gassed|be exterminated|be wiped out|burn|rot)"
_HOW = "(?:how to|how do i|how can i|how should i|how do you|ways to|best way to|easiest way to|steps to)"
_MINOR = (
    "(?:child|children|kid|kids|minor|minors|underage|preteen|pre teen|toddler|little girl|little boy"
    "|year old girl|year old boy|schoolgirl|schoolboy)"
)
_PERSON = (
    "(?:wife|husband|boss|neighbor|neighbour|mom|mother|dad|father|brother|sister|teacher|ex|girlfriend"
    "|boyfriend|parents|family|roommate|friend|son|daughter)"
)
_SEXUAL = "(?:sex|sexual|nude|nudes|naked|porn|porno|pornography|erotic)"

_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    # Threats against the reader or a person.
    (
        ("harassment", "harassment/threatening", "violence"),
        (
            f"{_I_WILL} {_HARM} {_YOU}",
            f"{_I_WILL} {_HARM} {_THIRD}",
            f"{_I_WILL} shoot (?:{_YOU}|{_THIRD}) (?:dead|on sight|right now|like a dog|in the (?:head|face|back"
            "|chest|knee|knees|leg|legs|gut|heart|mouth|eye))",
            f"{_I_WILL} beat (?:{_YOU}|{_THIRD}) (?:up|to death|senseless|to a pulp)",
            f"{_I_WILL} (?:find|hunt) you (?:down|and kill you)",
            "(?:you are|youre|you r|ur) (?:going to|gonna) die",
            "(?:you will|youll) (?:die|be dead)",
            "(?:i|we) know where you live",
            "(?:you|u) (?:deserve|should) (?:to )?(?:die|be killed|be shot|be raped)",
            "(?:i|we) hope (?:you|u) (?:die|get killed|get shot|get raped)",
            "(?:i will|ill|im going to|i am going to) (?:put a bullet in|slit) your",
        ),
    ),
    # Telling someone to harm themselves.
    (
        ("harassment", "harassment/threatening", "self-harm"),
        (
            "kill (?:yourself|yourselves|urself|your self)",
            "kys",
            "go (?:die|hang yourself|jump off a bridge|drink bleach)",
            "(?:you|u) should (?:kill yourself|hang yourself|end your life|just die)",
        ),
    ),
    # Insults aimed at the reader.
    (
        ("harassment",),
        (
            "(?:you are|youre|you r|ur|you) (?:a |an |such a |so |the )?(?:fucking |stupid |dumb |worthless )?"
            "(?:stupid|worthless|pathetic|retarded|retard|idiot|moron|loser|piece of shit"
            "|waste of space|waste of oxygen|whore|slut|bitch|cunt|scum|subhuman)",
            "fuck (?:you|off|u)",
            "(?:screw|damn) you",
            "shut the fuck up",
            "nobody (?:likes|loves|wants) you",
            "(?:everyone|everybody) hates you",
            "(?:stupid|dumb|worthless|fucking|ugly|fat) (?:bitch|idiot|moron|cunt|whore|slut|retard)",
        ),
    ),
    # Dehumanising talk about a group.
    (
        ("hate",),
        (
            f"{_GROUPS} are (?:all )?(?:vermin|animals|subhuman|sub human|parasites|cockroaches|rats|a disease"
            "|a plague|inferior|filth|not human)",
            f"(?:i hate|we hate|death to) (?:all )?(?:the )?{_GROUPS}",
            "white power",
            "heil hitler",
            "sieg heil",
            "race war now",
        ),
    ),
    # Calls for violence against a group.
    (
        ("hate", "hate/threatening", "violence"),
        (
            f"(?:all |the |those |these )?{_GROUPS} (?:should|must|need to|deserve to|ought to) {_DIE}",
            f"(?:kill|exterminate|gas|eradicate|wipe out|shoot|lynch|hang) (?:all |the |those |these )+{_GROUPS}",
            "gas the (?:jews|gays)",
        ),
    ),
    # Self-harm in the first person.
    (
        ("self-harm",),
        (
            # Not "cut myself" or "hurt myself": "I cut myself shaving" is not self-harm.
            "(?:kill|killing|cutting|harming|starving|hanging) myself",
            "(?:end|ending|take|taking) my (?:own )?life",
            "slit my wrists",
        ),
    ),
    (
        ("self-harm", "self-harm/intent"),
        (
            "(?:i|im|i am) (?:want|wanna|going|gonna|plan|planning|intend|will|wil|about|ready|thinking about)"
            " (?:to )?(?:kill myself|end my life|end it all|hurt myself|cut myself|commit suicide|take my own life)",
            # Not "going to die": "I'm going to die of boredom".
            "(?:i|im|i am) (?:want|wanna|want to) die",
            "(?:i dont|i do not) want to (?:live|be alive|exist) (?:anymore|any more)",
            "i wish i (?:was|were) dead",
            "(?:i am|im|i feel|feeling) suicidal",
        ),
    ),
    (
        ("self-harm", "self-harm/instructions"),
        (
            f"{_HOW} (?:kill (?:myself|yourself)|commit suicide|end (?:my|your) life|cut (?:myself|yourself)"
            "|hang (?:myself|yourself)|overdose|od)",
            "(?:best|easiest|quickest|painless|least painful|surest) (?:way|ways|method|methods) to (?:die"
            "|kill (?:myself|yourself)|commit suicide|end (?:my|your) life)",
            "how many (?:pills|tablets|sleeping pills) (?:to|does it take to|would it take to) (?:die|overdose"
            "|kill (?:myself|yourself|me))",
        ),
    ),
    # Sexual content involving minors (checked before the general sexual rules; both apply).
    (
        ("sexual", "sexual/minors"),
        (
            f"{_SEXUAL} (?:photos |pictures |pics |images |videos |content |acts )?(?:of|with|involving) (?:a |an )?"
            f"{_MINOR}",
            f"{_MINOR} (?:porn|porno|pornography|nudes)",
            "child (?:sexual abuse material|sex abuse material)",
            "csam",
            "lolicon",
            "shotacon",
            "pedo (?:porn|pics)",
        ),
    ),
    (
        ("sexual",),
        (
            "(?:have|having|had|want) sex with",
            "(?:oral|anal) sex",
            "blowjob",
            "handjob",
            "porn",
            "porno",
            "pornhub",
            "send (?:me )?nudes",
            "(?:naked|nude) (?:pics|pictures|photos|selfies)",
            "masturbat[a-z]*",
            "suck my (?:dick|cock)",
        ),
    ),
    # Graphic violence.
    (
        ("violence", "violence/graphic"),
        (
            "(?:blood|guts|brains|intestines|entrails) (?:everywhere|spilling|splattered|sprayed|spilled|gushing)",
            "(?:ripped|tore|torn|cut|slit|sliced) (?:open )?(?:his|her|their|the victims) (?:throat|stomach|belly|guts"
            "|chest)",
            "(?:disembowel|dismember|decapitat|eviscerat)[a-z]*",
            "skinned (?:him |her |them )?alive",
            "gouged (?:out )?(?:his|her|their) eyes",
        ),
    ),
    # Violence as a plan.
    (
        ("violence",),
        (
            "(?:shoot|bomb|attack|blow) up (?:the |a |my |our )?(?:school|church|mosque|synagogue|temple|mall"
            "|concert|office|hospital)",
            "(?:shoot|bomb|attack) (?:the |a |my |our )?(?:school|church|mosque|synagogue|temple|mall|concert)",
            "(?:plan|planning|commit|carry out) a (?:mass shooting|massacre|terrorist attack)",
        ),
    ),
    # Dangerous instructions: weapons and violence.
    (
        ("illicit", "illicit/violent", "violence"),
        (
            f"{_HOW} (?:make|build|assemble|create) (?:a |an )?(?:bomb|pipe bomb|explosive|explosives|molotov cocktail"
            "|ied|nerve agent|nerve gas|sarin|ricin|anthrax|ghost gun|silencer)",
            f"{_HOW} (?:poison|kill|murder|strangle|stab) (?:someone|somebody|a person|people|my {_PERSON})",
            "(?:where|how) (?:to|can i|do i) (?:buy|get) (?:an? )?(?:illegal |untraceable |unregistered )"
            "(?:gun|guns|firearm|firearms|weapon|weapons)",
            f"{_HOW} (?:get away with|cover up) (?:a )?murder",
        ),
    ),
    # Dangerous instructions: other crime.
    (
        ("illicit",),
        (
            f"{_HOW} (?:make|cook|synthesize|synthesise|produce) (?:meth|methamphetamine|crack|heroin|cocaine"
            "|fentanyl|lsd|mdma)",
            f"{_HOW} (?:launder money|steal (?:a car|someones identity|credit cards|a credit card)|shoplift"
            "|hotwire a car|make counterfeit money|forge a passport|evade taxes)",
            f"{_HOW} hack into (?:someones|somebodys|my exs|his|her) (?:[a-z]+ )?(?:account|email|phone)",
            "(?:buy|sell|selling|buying) (?:stolen credit cards|credit card numbers|fake passports|counterfeit money"
            "|stolen identities)",
        ),
    ),
)


def _compile(source: str) -> re.Pattern[str]:
    source = _REPEATS.sub(r"\1", source).replace(" ", " ?")
    return re.compile(f"(?<![a-z])(?:{source})(?![a-z])")


# One alternation per category set, compiled at import.
_COMPILED = tuple((categories, _compile("|".join(f"(?:{s})" for s in sources))) for categories, sources in _RULES)


def classify(text: str) -> ModerationOutput:
    variants = {normalise(text)}
    if "1" in text or "|" in text:
        variants.add(normalise(text, one="l"))  # "1" is "i" in "k1ll" and "l" in "ki11"
    flagged: set[str] = set()
    for categories, pattern in _COMPILED:
        if not flagged.issuperset(categories) and any(pattern.search(v) for v in variants):
            flagged.update(categories)
    return ModerationOutput(flagged=bool(flagged), categories=[c for c in CATEGORIES if c in flagged])


class Rules:
    """What the moderation slot "loads": the rules are compiled at import, so nothing."""

    def classify(self, text: str) -> ModerationOutput:
        return classify(text)


def load_rules() -> Rules:
    return Rules()


class LocalModeration:
    """A ``ModerationAdapter``; runs on its own worker so a long text never stalls the event loop."""

    def __init__(self, slot: ModelSlot[Rules]) -> None:
        self._slot = slot

    async def moderate(self, call: ModerationCall) -> ModerationOutput:
        return await self._slot.run(
            _classify, call.text, timeout_s=call.timeout_s, where=call.context.describe(call.target)
        )


def _classify(rules: Rules, text: str) -> ModerationOutput:
    """Run in the rules' process (module-level: calls are pickled by name). A process of its
    own, although pure Python: a regular expression holds the GIL for its whole search, so
    a thread here would stall the event loop on long texts."""
    return rules.classify(text)
