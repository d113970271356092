"""Offline demo datasets for the NLP tasks, made from templates and word lists in this file.

`sentences` (text_classification): support-ticket messages in five classes. The classes share
vocabulary (orders, accounts, the app, payments); messages carry greetings, sign-offs and
distractor remarks about other topics, "X is fine, but Y" negations, a few typos, and near-miss
phrasings (a crash on the checkout page that is a billing ticket). About a quarter of each class's
phrasings are held out of training and appear only in val and test, so val also measures
generalisation to new wordings.

`entities` (token_classification): sentences with PER, ORG, LOC and PRODUCT entities in IOB2.
Names are built from made-up stems (syllables plus town, company and model suffixes) and a list of
given names; the stems and names are split once between train, val and test, so no distinctive
word of a val or test entity occurs anywhere in train (only generic parts such as "Ltd", "Port" or
"Pro" are shared). Made-up stems split into several word pieces, as unseen names do.

Splits are drawn in the order val, test, train; each later split rejects sentences an earlier one
holds (case and punctuation ignored). So val and test do not change when the training count
changes, and a smaller training set is the first rows of a larger one. TSV files have no header.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .demo import _rng, _write, register_demo

SPLIT_ORDER = ("val", "test", "train")  # generation order; see the module docstring
_MAX_ATTEMPTS = 200  # draws per item before giving up on finding a new sentence
_MIN_WORDS, _MAX_WORDS = 4, 40


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _dedup_key(text: str) -> str:
    """Two sentences count as the same when they differ only in case, punctuation or spacing."""
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


def _too_many(what: str, split: str, made: int, option: str) -> DataError:
    return DataError(f"demo: could not make more than {made} distinct {what} for {split}; "
                     f"use a smaller {option}")


# =================================================================================================
# sentences
# =================================================================================================

TICKET_CLASSES = ("account_access", "billing", "bug_report", "feature_request", "shipping")

_FILL: dict[str, tuple[str, ...]] = {
    "product": ("the app", "the mobile app", "the website", "the desktop client", "the dashboard",
                "the browser extension", "the iPad app", "the web portal", "the Android app", "your software"),
    "screen": ("the settings page", "the checkout page", "the login screen", "the invoice page",
               "the order history page", "my profile page", "the home screen", "the search page",
               "the reports tab", "the cart"),
    "when": ("since yesterday", "since the last update", "for three days now", "this morning", "every time",
             "after the update", "since Monday", "again today", "for a week", "twice this month", "right now",
             "since I changed phones"),
    "amount": ("$12.99", "$45", "$9.50", "€30", "£120", "$249.00", "the full amount", "twice the usual amount",
               "an extra $5", "$19.99"),
    "plan": ("the premium plan", "my monthly subscription", "the family plan", "the annual plan", "the pro tier",
             "a plan I never ordered", "the business plan", "the basic plan"),
    "item": ("order", "package", "parcel", "headphones", "charger", "replacement part", "blender", "laptop bag",
             "running shoes", "desk lamp", "phone case", "coffee grinder"),
    "feature": ("dark mode", "an export to CSV", "a calendar view", "offline mode", "shared folders",
                "keyboard shortcuts", "bulk editing", "a Linux version", "custom tags", "a home screen widget",
                "single sign-on", "recurring reminders"),
    "action": ("export my data as a spreadsheet", "pause a subscription for a month", "schedule reports",
               "merge duplicate contacts", "choose a delivery time slot", "split a payment across two cards",
               "undo a deleted message", "invite guests without an account", "change the font size"),
    "device": ("my iPhone", "Android", "Chrome", "Firefox", "my Windows laptop", "a Mac", "the iPad", "Safari"),
    "country": ("Canada", "Norway", "Brazil", "Japan", "Kenya", "Poland", "New Zealand", "Mexico", "India",
                "Portugal"),
    "person": ("my manager", "a colleague", "my wife", "my husband", "our new intern", "my son", "the office admin"),
    "courier": ("the courier", "the driver", "the delivery company", "the post office"),
    "email": ("anna.k@example.com", "jsmith@example.org", "m.lopez@example.net", "team@example.com"),
}

# Core phrasings per class. "*" marks a held-out phrasing: it appears in val and test only.
# "~" marks a near miss: its words point at another class (comment names which).
_CORES: dict[str, tuple[str, ...]] = {
    "account_access": (
        "I can't log in to my account {when}",
        "I forgot my password and the reset email never arrives",
        "my account got locked after too many login attempts",
        "the verification code you text me is never accepted",
        "how do I change the email address on my account",
        "I think someone else logged in to my account {when}",
        "I lost my phone and can't get the two-factor code anymore",
        "please unlock the account for {person}",
        "~my login works on {device} but not on the website",  # bug_report
        "~the app keeps asking me to verify my identity {when}",  # bug_report
        "the password reset link expired before I could use it",
        "locked out of my account again",
        "*I am unable to sign in even with the right password",
        "*my username is not recognised although I registered {when}",
        "*please give me admin rights on our team account",
        "*how can I get back into an account tied to an old email address",
    ),
    "billing": (
        "I was charged {amount} twice for {plan}",
        "why did my bill go up {when}",
        "please refund the {amount} charge on my card",
        "my invoice shows the wrong company name",
        "cancel {plan} and stop charging my card",
        "{plan} renewed and took {amount} without any warning",
        "can I get a receipt for order {num}",
        "I need to update my credit card before the next payment",
        "~the checkout page charged me {amount} but then showed an error",  # bug_report
        "~I returned my {item} weeks ago and still have no refund",  # shipping
        "~I was charged a shipping fee on an order that should ship free",  # shipping
        "charged twice, refund please",
        "*there is an unknown payment of {amount} on my statement",
        "*you billed me for {plan} even though I downgraded {when}",
        "*do you offer a student discount on {plan}",
        "*please move me to yearly billing",
    ),
    "bug_report": (
        "{product} crashes when I open {screen}",
        "{screen} stays blank {when}",
        "I get error {code} whenever I try to save",
        "the export button does nothing on {device}",
        "notifications stopped working {when}",
        "{product} freezes after a few minutes on {device}",
        "images do not load on {screen} in {device}",
        "~the total on {screen} is calculated wrong",  # billing
        "~the tracking link in the app gives a 404 error",  # shipping
        "~the login button is greyed out so I cannot even type my password",  # account_access
        "~dark mode makes the text unreadable on {screen}",  # feature_request
        "app crashes on startup",
        "*the page keeps reloading and I lose what I typed",
        "*uploading a file larger than 10 MB fails with error {code}",
        "*the dates on {screen} show the wrong time zone",
        "*{product} drains my battery {when}",
    ),
    "feature_request": (
        "it would be great if {product} had {feature}",
        "please add {feature}",
        "are there any plans to support {feature}",
        "could you add an option to {action}",
        "I would love to see {feature} in the next release",
        "our team really needs {feature}",
        "suggestion: let users {action}",
        "~please add a way to pay with PayPal",  # billing
        "~could you send delivery updates by text message",  # shipping
        "~please let admins reset passwords for team members",  # account_access
        "is it possible to get {feature} on {device}",
        "need {feature} asap",
        "*I wish I could {action}",
        "*one more vote from me for {feature}",
        "*any chance of {feature} for {product}",
        "*a way to {action} would save us hours every week",
    ),
    "shipping": (
        "my {item} has not arrived {when}",
        "where is order {num}",
        "tracking says delivered but there is no {item} here",
        "the {item} arrived damaged and the box was crushed",
        "can I change the delivery address for order {num}",
        "how long does shipping to {country} take",
        "{courier} left my {item} at the wrong house",
        "I received the wrong {item} in my package",
        "~the tracking number for order {num} does not work",  # bug_report
        "~I paid for next day delivery but the {item} is still not here",  # billing
        "~is it possible to pick up order {num} from a store",  # feature_request
        "package still not here",
        "*do you deliver to {country}",
        "*my {item} has been stuck in customs {when}",
        "*half of order {num} is missing from the box",
        "*{courier} never rang the bell and took my {item} back",
    ),
}

# "X is fine" remarks about another class, placed before or after a core: "nothing is broken, but ...".
_NEGATIONS: dict[str, tuple[str, ...]] = {
    "account_access": ("I can log in fine", "my password works", "this is not a login problem"),
    "billing": ("the payment went through fine", "this is not about money", "my bill is correct"),
    "bug_report": ("nothing is broken", "the app itself works fine", "this is not a bug"),
    "feature_request": ("I am not asking for a new feature", "I don't need anything new"),
    "shipping": ("my package arrived on time", "this is not about delivery", "the order arrived fine"),
}
_OPENERS = ("hi", "hello", "hi there", "hey team", "good morning", "dear support", "hello again",
            "quick question", "urgent")
_REMARKS = ("I have been a customer for years", "my order number is {num}", "my account email is {email}",
            "I already tried restarting {device}", "I'm using {device}", "this is the third time I write to you",
            "sorry for my English", "I love the product otherwise", "my last invoice was fine",
            "the delivery last month was quick", "I updated the app last night", "please answer quickly",
            "a colleague has the same problem", "I already reinstalled the app")
_CLOSERS = ("thanks", "thank you", "thanks in advance", "cheers", "regards", "please help",
            "any help appreciated", "thx")
_QUESTION_STARTS = ("how", "why", "where", "can", "could", "do", "are", "is", "any")
_TYPO_RATE = 0.03  # per word of 4+ letters


@dataclass(frozen=True)
class Phrasing:
    """A core phrasing of one class, with its slots ("{when}") still open."""
    text: str
    heldout: bool  # only in val and test
    near_miss: bool


def _cores(label: str) -> list[Phrasing]:
    out: list[Phrasing] = []
    for text in _CORES[label]:
        heldout, near = text.startswith("*"), text.startswith("~")
        out.append(Phrasing(text.lstrip("*~"), heldout, near))
    return out


def _fill(rng: np.random.Generator, template: str) -> str:
    def one(match: re.Match) -> str:
        slot = match.group(1)
        if slot == "num":
            return "#" + str(int(rng.integers(10_000, 1_000_000)))
        if slot == "code":
            return _pick(rng, ("E" + str(int(rng.integers(100, 1000))), str(int(rng.integers(400, 505))),
                               "0x8007" + str(int(rng.integers(1000, 10_000)))))
        return _pick(rng, _FILL[slot])
    return re.sub(r"\{(\w+)\}", one, template)


def _typo(rng: np.random.Generator, word: str) -> str:
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:  # swap two neighbouring letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:  # drop a letter
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double a letter


def _clause_end(clause: str, rng: np.random.Generator) -> str:
    """The clause with end punctuation: a question mark (or none) for questions, else mostly a full stop."""
    if clause.split(", but ")[-1].split()[0].lower() in _QUESTION_STARTS:
        return clause + _pick(rng, ("?", "?", "??", ""))
    return clause + _pick(rng, (".", ".", ".", "!", ""))


def ticket_sentence(seed: int, split: str, label: str, index: int, attempt: int = 0) -> tuple[str, Phrasing]:
    """One `sentences` message of class `label` and the core phrasing it was built around."""
    rng = _rng(seed, "sentences", split, label, index, attempt)
    cores = [c for c in _cores(label) if split != "train" or not c.heldout]
    core = cores[int(rng.integers(len(cores)))]
    clauses = [_fill(rng, core.text)]
    if rng.random() < 0.12:  # a remark that rules out another class
        other = _pick(rng, [c for c in TICKET_CLASSES if c != label])
        negation = _pick(rng, _NEGATIONS[other])
        clauses = [f"{negation}, but {clauses[0]}"] if rng.random() < 0.6 else [clauses[0], negation]
    if rng.random() < 0.2:
        clauses.insert(0, _fill(rng, _pick(rng, _REMARKS)))
    if rng.random() < 0.2:
        clauses.append(_fill(rng, _pick(rng, _REMARKS)))
    text = " ".join(_clause_end(c, rng) for c in clauses)
    if rng.random() < 0.35:
        text = f"{_pick(rng, _OPENERS)}, {text}"
    if rng.random() < 0.35:
        text = f"{text} {_pick(rng, _CLOSERS)}"
    style = rng.random()
    if style < 0.2:
        text = text.lower()
    elif style < 0.9:  # capitalise each clause
        text = re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    words = [(_typo(rng, w) if w.isalpha() and len(w) >= 4 and rng.random() < _TYPO_RATE else w)
             for w in text.split()]
    return " ".join(words), core


def _ticket_split(seed: int, split: str, per_class: int, taken: set[str]) -> list[tuple[str, str, Phrasing]]:
    """per_class messages of each class, class after class in turn; adds their keys to `taken`."""
    rows = []
    for index in range(per_class):
        for label in TICKET_CLASSES:
            for attempt in range(_MAX_ATTEMPTS):
                text, core = ticket_sentence(seed, split, label, index, attempt)
                key = _dedup_key(text)
                if key not in taken and _MIN_WORDS <= len(text.split()) <= _MAX_WORDS:
                    taken.add(key)
                    rows.append((text, label, core))
                    break
            else:
                raise _too_many(f"{label} messages", split, index, "per_class / val_per_class / num_test")
    return rows


@register_demo("sentences", "text_classification",
               "support-ticket messages in 5 classes (account_access, billing, bug_report, feature_request, "
               "shipping) with shared vocabulary, negations, typos and near misses; some phrasings only in val",
               per_class=60, val_per_class=20, num_test=25)
def _build_sentences(out: Path, *, seed: int, per_class: int, val_per_class: int, num_test: int) -> dict:
    taken: set[str] = set()
    test_per_class = -(-num_test // len(TICKET_CLASSES))
    counts = {"val": val_per_class, "test": test_per_class, "train": per_class}
    rows = {split: _ticket_split(seed, split, counts[split], taken) for split in SPLIT_ORDER}
    rows["test"] = rows["test"][:num_test]
    index = {label: i for i, label in enumerate(TICKET_CLASSES)}
    _write(out / "labels.txt", "".join(f"{label}\n" for label in TICKET_CLASSES))
    for split in ("train", "val", "test"):
        _write(out / f"{split}.tsv", "".join(f"{text}\t{label}\n" for text, label, _ in rows[split]))
    for split in ("train", "val"):
        _write(out / f"{split}_int.tsv", "".join(f"{text}\t{index[label]}\n" for text, label, _ in rows[split]))
    _write(out / "test_lines.txt", "".join(f"{text}\n" for text, _, _ in rows["test"]))
    return {
        "classes": list(TICKET_CLASSES),
        "counts": {split: {c: sum(1 for _, label, _ in rows[split] if label == c) for c in TICKET_CLASSES}
                   for split in ("train", "val", "test")},
        "heldout_phrasings": {split: sum(1 for *_, core in rows[split] if core.heldout) for split in ("val", "test")},
        "near_misses": {split: sum(1 for *_, core in rows[split] if core.near_miss) for split in ("train", "val")},
        "format": "TSV without a header: sentence<TAB>label (names); *_int.tsv: sentence<TAB>line index in labels.txt",
        "paths": {"train": {"tsv": "train.tsv", "int_tsv": "train_int.tsv"},
                  "val": {"tsv": "val.tsv", "int_tsv": "val_int.tsv"},
                  "test": {"tsv": "test.tsv", "lines": "test_lines.txt"},
                  "labels": "labels.txt"},
    }


# =================================================================================================
# entities
# =================================================================================================

ENTITY_TYPES = ("LOC", "ORG", "PER", "PRODUCT")
ENTITY_TAGS = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))

_GIVEN_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jamal", "Kira", "Liam", "Maya",
    "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wei", "Yusuf", "Zoe", "Aisha",
    "Bruno", "Chloe", "Diego", "Emma", "Felix", "Gita", "Hannah", "Ivan", "Julia", "Kenji", "Lena", "Mateo",
    "Nadia", "Oscar", "Paula", "Rahul", "Sofia", "Tomas", "Uma", "Victor", "Wanda", "Xavier", "Yara", "Zane",
    "Amir", "Bianca", "Chen", "Dana", "Erik", "Fatima", "Gabriel", "Helga", "Isaac", "Jana", "Karim", "Lucia",
    "Marco", "Nina", "Olga", "Pedro", "Rita", "Stefan", "Tess", "Ulla", "Vikram", "Wendy", "Yasmin", "Ahmed",
    "Beatriz", "Connor", "Dmitri", "Eva", "Femi", "Greta", "Hiro", "Ilse", "Joaquin", "Leila", "Mei", "Nils",
)
_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "h", "j", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t",
           "tr", "v", "z", "th", "sh", "w")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou", "ia")
_CODAS = ("n", "r", "l", "s", "m", "th", "x", "nd", "rk", "sk")
_SURNAME_ENDINGS = ("son", "sen", "ez", "ski", "ova", "er", "berg", "ani", "ley", "wick")
_TOWN_ENDINGS = ("ville", "burg", "ton", "field", "ford", "mouth", "stad", "haven", "dale")
_COMPANY_ENDINGS = ("corp", "soft", "tex", "ify", "net", "ware")
_PRODUCT_ENDINGS = ("ix", "tron", "io", "ora", "on")

_ORG_SUFFIXES = ("Ltd", "Systems", "Group", "Labs", "Inc.", "Holdings", "Logistics", "Analytics", "Partners",
                 "Technologies", "Foods", "Motors", "Media", "Energy", "GmbH")
_ORG_OF = ("Bank", "University", "Museum")
_LOC_PREFIXES = ("New", "Port", "Lake", "Fort", "San", "Mount", "North", "East")
_LOC_SUFFIXES = ("Springs", "Falls", "Bay", "Heights", "Valley", "Island", "Beach", "City")
_PRODUCT_MODELS = ("Pro", "Max", "Mini", "Air", "Plus", "Lite", "Go", "Ultra")
_PRODUCT_NUMBERS = tuple(str(n * 100) for n in range(1, 10)) + tuple(f"X{d}" for d in range(1, 10))
_TITLES = ("Dr.", "Ms.", "Mr.", "Prof.")
_INITIALS = tuple(f"{c}." for c in string.ascii_uppercase)
# Parts of entities that every split uses; all other entity words belong to one split only.
GENERIC_ENTITY_WORDS = frozenset(
    _ORG_SUFFIXES + _ORG_OF + ("of", "&") + _LOC_PREFIXES + _LOC_SUFFIXES + _PRODUCT_MODELS + _PRODUCT_NUMBERS
    + _INITIALS)

_ROLES = ("CEO", "head of sales", "chief engineer", "product manager", "CFO", "lead designer", "head of support")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")

# Tokens are separated by spaces; {PER} {ORG} {LOC} {PRODUCT} are entities, {TPER} a titled surname
# (the title is O, as in CoNLL-2003), {DAY} {MONTH} {NUM} {ROLE} plain words.
_ENTITY_TEMPLATES = (
    "{PER} joined {ORG} as {ROLE} in {MONTH} .",
    "{PER} flew from {LOC} to {LOC} on {DAY} .",
    "The new {PRODUCT} from {ORG} ships next month .",
    "{ORG} opened a second office in {LOC} .",
    "Customers in {LOC} say the {PRODUCT} overheats after an hour .",
    "According to {PER} , the {PRODUCT} sold out within hours .",
    "Please forward the invoice to {PER} at {ORG} .",
    "{PER} and {PER} met in {LOC} to discuss the merger .",
    "Our team in {LOC} switched to the {PRODUCT} in {MONTH} .",
    "Did {PER} call back about the {PRODUCT} order ?",
    "{ORG} recalled every {PRODUCT} sold in {LOC} .",
    "{PER} , {ROLE} of {ORG} , spoke at a conference in {LOC} on {DAY} .",
    "I bought a {PRODUCT} at the store in {LOC} .",
    "{TPER} from {ORG} will visit {LOC} on {DAY} .",
    "{ORG} hired {NUM} engineers in {LOC} this year .",
    "Is the {PRODUCT} available in {LOC} yet ?",
    "{PER} wrote a long review of the {PRODUCT} .",
    "The {PRODUCT} battery lasts longer than the old model , says {PER} .",
    "{ORG} and {ORG} signed a supply deal on {DAY} .",
    "Send the contract to {PER} before {DAY} .",
    "{PER} moved to {LOC} after leaving {ORG} .",
    "We shipped {NUM} units of the {PRODUCT} to {LOC} .",
    "{TPER} recommended the {PRODUCT} to every client .",
    "Traffic in {LOC} was heavy on {DAY} morning .",
    "{ORG} shares fell after the {PRODUCT} launch .",
    "Has anyone at {ORG} tried the {PRODUCT} ?",
    "My sister lives near {LOC} and works for {ORG} .",
    "The {LOC} branch of {ORG} closes at six .",
    "Call {PER} if the {PRODUCT} stops working .",
    "{PER} thanked the staff in {LOC} .",
    "Thanks to {PER} , the deal with {ORG} closed early .",
    "{PER} said {ORG} will not comment on the {PRODUCT} .",
    "The conference moves from {LOC} to {LOC} next year .",
    "Yesterday {PER} presented the {PRODUCT} in {LOC} .",
    "On {DAY} {TPER} met the {ROLE} of {ORG} .",
    "{ORG} bought {ORG} for {NUM} million dollars .",
    "Reviewers in {LOC} called the {PRODUCT} the best device of the year .",
    "{PER} is the new {ROLE} at {ORG} .",
    "Ask {PER} whether the {PRODUCT} works offline .",
    "The {PRODUCT} is made in {LOC} by {ORG} .",
)
_PLAIN_TEMPLATES = (  # sentences without entities (capitalised words such as days are still O)
    "The meeting was moved to {DAY} afternoon .",
    "Nobody answered the phone at the front desk on {DAY} .",
    "Sales rose by {NUM} percent in the third quarter .",
    "Please send me the report before {DAY} .",
    "The new office opens in {MONTH} .",
    "Our {ROLE} will call you back tomorrow .",
    "The printer on the second floor is broken again .",
    "We ordered {NUM} chairs for the new team .",
    "Can someone check the shared calendar for {DAY} ?",
    "The company will announce results in {MONTH} .",
    "Lunch is on the terrace if the weather is good .",
    "The city council approved the budget on {DAY} .",
    "The quarterly review is scheduled for {MONTH} {NUM} .",
    "Support tickets doubled after the last update .",
    "The {ROLE} asked for a shorter report on {DAY} .",
    "About {NUM} people signed up for the workshop in {MONTH} .",
)
_PLAIN_RATE = 0.15
_NAME_SPLIT = {"val": 0.25, "test": 0.10}  # the rest of the stems and given names are train's
_NUM_STEMS = 1600
_ACRONYMS_PER_SPLIT = 60


@dataclass(frozen=True)
class NamePool:
    """The distinctive name words one split may use, by role."""
    given: tuple[str, ...]
    surnames: tuple[str, ...]
    places: tuple[str, ...]  # stems and one-word town names
    companies: tuple[str, ...]  # stems, one-word company names and acronyms
    products: tuple[str, ...]

    def words(self) -> set[str]:
        return set(self.given + self.surnames + self.places + self.companies + self.products)


def _template_words() -> set[str]:
    """Lower-cased words the templates and fillers use outside entities; no made-up name may equal one."""
    texts = _ENTITY_TEMPLATES + _PLAIN_TEMPLATES + _ROLES + _DAYS + _MONTHS + tuple(GENERIC_ENTITY_WORDS)
    return {w.lower() for text in texts for w in text.split()}


def _stem(rng: np.random.Generator) -> str:
    """A made-up name stem: open syllables, sometimes a closing consonant ("Tamora", "Velikan")."""
    syllables = 2 if rng.random() < 0.65 else 3
    word = "".join(_pick(rng, _ONSETS) + _pick(rng, _VOWELS) for _ in range(syllables))
    if rng.random() < 0.6:
        word += _pick(rng, _CODAS)
    return word.capitalize()


def _base(stem: str) -> str:
    """The stem without its final vowels, so that an ending reads naturally ("Kora" + "ville" -> "Korville")."""
    return stem.rstrip("aeiouy") if len(stem.rstrip("aeiouy")) >= 2 else stem


def name_pools(seed: int) -> dict[str, NamePool]:
    """Disjoint name words for train, val and test: no word (case ignored) is in two splits."""
    rng = _rng(seed, "entities", "names")
    common = _template_words()
    stems: list[str] = []
    seen: set[str] = set()
    while len(stems) < _NUM_STEMS:
        stem = _stem(rng)
        if 4 <= len(stem) <= 10 and stem.lower() not in seen and stem.lower() not in common:
            seen.add(stem.lower())
            stems.append(stem)
    acronyms: list[str] = []
    while len(acronyms) < _ACRONYMS_PER_SPLIT * 3:
        acronym = "".join(_pick(rng, string.ascii_uppercase) for _ in range(3))
        if acronym.lower() not in seen and acronym.lower() not in common:
            seen.add(acronym.lower())
            acronyms.append(acronym)
    given = [g for g in _GIVEN_NAMES if g.lower() not in common]

    def parts(items: list[str]) -> dict[str, list[str]]:
        shuffled = [items[i] for i in rng.permutation(len(items))]
        n_val, n_test = (int(round(len(items) * _NAME_SPLIT[s])) for s in ("val", "test"))
        return {"val": shuffled[:n_val], "test": shuffled[n_val:n_val + n_test], "train": shuffled[n_val + n_test:]}

    stem_parts, given_parts = parts(stems), parts(given)
    acronym_parts = {s: acronyms[i * _ACRONYMS_PER_SPLIT:(i + 1) * _ACRONYMS_PER_SPLIT]
                     for i, s in enumerate(SPLIT_ORDER)}
    pools = {}
    for split in SPLIT_ORDER:
        own = stem_parts[split]
        # Each stem serves one role, with a derived one-word form beside it; a few stems also make
        # given names, so some first names split into several word pieces too.
        quarter = len(own) // 4
        people, places, companies, products = (own[i * quarter:(i + 1) * quarter] for i in range(4))
        pools[split] = NamePool(
            given=tuple(given_parts[split] + people[: quarter // 4]),
            surnames=tuple(people + [s + _pick(rng, _SURNAME_ENDINGS) for s in people[quarter // 2:]]),
            places=tuple(places + [_base(s) + _pick(rng, _TOWN_ENDINGS) for s in places[quarter // 2:]]),
            companies=tuple(companies + [s + _pick(rng, _COMPANY_ENDINGS) for s in companies[quarter // 2:]]
                            + acronym_parts[split]),
            products=tuple(products + [_base(s) + _pick(rng, _PRODUCT_ENDINGS) for s in products[quarter // 2:]]),
        )
    # A derived word ("Dal" + "ton") may equal another split's word: drop such words everywhere.
    owners: dict[str, set[str]] = {}
    for split, pool in pools.items():
        for word in pool.words():
            owners.setdefault(word.lower(), set()).add(split)
    clash = {w for w, splits in owners.items() if len(splits) > 1} | common

    def keep(words: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(w for w in words if w.lower() not in clash))

    return {split: NamePool(keep(p.given), keep(p.surnames), keep(p.places), keep(p.companies), keep(p.products))
            for split, p in pools.items()}


def _entity(rng: np.random.Generator, kind: str, pool: NamePool) -> list[str]:
    """The words of one entity of type `kind` drawn from `pool`."""
    r = rng.random()
    if kind == "PER":
        if r < 0.55:
            return [_pick(rng, pool.given), _pick(rng, pool.surnames)]
        if r < 0.70:
            return [_pick(rng, pool.given)]
        if r < 0.82:
            return [_pick(rng, pool.surnames)]
        if r < 0.94:
            return [_pick(rng, pool.given), _pick(rng, _INITIALS), _pick(rng, pool.surnames)]
        return [_pick(rng, pool.given), f"{_pick(rng, pool.surnames)}-{_pick(rng, pool.surnames)}"]
    if kind == "ORG":
        if r < 0.45:
            return [_pick(rng, pool.companies), _pick(rng, _ORG_SUFFIXES)]
        if r < 0.60:
            return [_pick(rng, pool.companies)]
        if r < 0.72:
            return [_pick(rng, pool.surnames), "&", _pick(rng, pool.surnames)]
        if r < 0.84:
            return [_pick(rng, _ORG_OF), "of", _pick(rng, pool.places)]
        return [_pick(rng, pool.places), _pick(rng, _ORG_SUFFIXES)]  # a company named after a place
    if kind == "LOC":
        if r < 0.45:
            return [_pick(rng, pool.places)]
        if r < 0.70:
            return [_pick(rng, _LOC_PREFIXES), _pick(rng, pool.places)]
        if r < 0.90:
            return [_pick(rng, pool.places), _pick(rng, _LOC_SUFFIXES)]
        return [_pick(rng, _LOC_PREFIXES), _pick(rng, pool.places), _pick(rng, _LOC_SUFFIXES)]
    if r < 0.30:  # PRODUCT
        return [_pick(rng, pool.products)]
    if r < 0.65:
        return [_pick(rng, pool.products), _pick(rng, _PRODUCT_MODELS)]
    if r < 0.85:
        return [_pick(rng, pool.products), _pick(rng, _PRODUCT_NUMBERS)]
    return [_pick(rng, pool.products), _pick(rng, _PRODUCT_MODELS), _pick(rng, _PRODUCT_NUMBERS)]


def entity_sentence(seed: int, split: str, index: int, pool: NamePool, attempt: int = 0
                    ) -> tuple[list[str], list[str]]:
    """One `entities` sentence: its words and their IOB2 tags."""
    rng = _rng(seed, "entities", split, index, attempt)
    plain = rng.random() < _PLAIN_RATE
    template = _pick(rng, _PLAIN_TEMPLATES if plain else _ENTITY_TEMPLATES)
    words: list[str] = []
    tags: list[str] = []
    for token in template.split():
        slot = token[1:-1] if token.startswith("{") and token.endswith("}") else None
        if slot in ENTITY_TYPES:
            entity = _entity(rng, slot, pool)
            words += entity
            tags += [f"B-{slot}"] + [f"I-{slot}"] * (len(entity) - 1)
        elif slot == "TPER":
            words += [_pick(rng, _TITLES), _pick(rng, pool.surnames)]
            tags += ["O", "B-PER"]
        else:
            if slot == "NUM":
                filler = [str(int(rng.integers(2, 100)))]
            elif slot is not None:
                filler = _pick(rng, {"DAY": _DAYS, "MONTH": _MONTHS, "ROLE": _ROLES}[slot]).split()
            else:
                filler = [token]
            words += filler
            tags += ["O"] * len(filler)
    return words, tags


def detokenize(words: list[str]) -> str:
    """Words as running text: no space before punctuation."""
    return re.sub(r" ([,.?!])", r"\1", " ".join(words))


def _entity_split(seed: int, split: str, count: int, pool: NamePool, taken: set[str]
                  ) -> list[tuple[list[str], list[str]]]:
    rows = []
    for index in range(count):
        for attempt in range(_MAX_ATTEMPTS):
            words, tags = entity_sentence(seed, split, index, pool, attempt)
            key = _dedup_key(" ".join(words))
            if key not in taken:
                taken.add(key)
                rows.append((words, tags))
                break
        else:
            raise _too_many("sentences", split, index, "num_train / num_val / num_test")
    return rows


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word) of each IOB2 entity."""
    spans: list[tuple[str, int, int]] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            spans.append((tag[2:], i, i + 1))
        elif tag.startswith("I-"):
            kind, start, _ = spans[-1]
            spans[-1] = (kind, start, i + 1)
    return spans


def _split_counts(rows: list[tuple[list[str], list[str]]]) -> dict:
    spans = [entity_spans(tags) for _, tags in rows]
    return {
        "sentences": len(rows),
        "tokens": sum(len(words) for words, _ in rows),
        "entities": {t: sum(1 for s in spans for kind, _, _ in s if kind == t) for t in ENTITY_TYPES},
        "multi_word_entities": sum(1 for s in spans for _, a, b in s if b - a > 1),
        "sentences_without_entities": sum(1 for s in spans if not s),
    }


def _conll(rows: list[tuple[list[str], list[str]]]) -> str:
    return "\n".join("".join(f"{w} {t}\n" for w, t in zip(words, tags)) for words, tags in rows)


@register_demo("entities", "token_classification",
               "templated sentences with PER, ORG, LOC and PRODUCT entities (IOB2, CoNLL and NeMo files); "
               "val and test names never occur in train", num_train=300, num_val=100, num_test=25)
def _build_entities(out: Path, *, seed: int, num_train: int, num_val: int, num_test: int) -> dict:
    pools = name_pools(seed)
    counts = {"val": num_val, "test": num_test, "train": num_train}
    taken: set[str] = set()
    rows = {split: _entity_split(seed, split, counts[split], pools[split], taken) for split in SPLIT_ORDER}
    for split in ("train", "val", "test"):
        _write(out / f"{split}.txt", _conll(rows[split]))
    for split in ("train", "val"):
        _write(out / f"text_{split}.txt", "".join(" ".join(words) + "\n" for words, _ in rows[split]))
        _write(out / f"labels_{split}.txt", "".join(" ".join(tags) + "\n" for _, tags in rows[split]))
    _write(out / "test_lines.txt", "".join(detokenize(words) + "\n" for words, _ in rows["test"]))
    return {
        "classes": list(ENTITY_TAGS),
        "entity_types": list(ENTITY_TYPES),
        "counts": {split: _split_counts(rows[split]) for split in ("train", "val", "test")},
        "name_words": {split: len(pools[split].words()) for split in ("train", "val", "test")},
        "format": "CoNLL: 'word TAG' per line (IOB2), blank line between sentences; "
                  "NeMo: text_*.txt words and labels_*.txt tags, one sentence per line",
        "paths": {"train": {"conll": "train.txt", "text": "text_train.txt", "labels": "labels_train.txt"},
                  "val": {"conll": "val.txt", "text": "text_val.txt", "labels": "labels_val.txt"},
                  "test": {"conll": "test.txt", "lines": "test_lines.txt"}},
    }

