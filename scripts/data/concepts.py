"""The six concepts as templates and items: the raw material make_pairs.py pairs up.

Not run on its own (see make_pairs.py). A template is a prompt with one slot, `{x}`
(the item's text as written) or `{X}` (first letter capitalized, at a sentence start),
and a map from an item's label to the answer that label calls for. An item is a slot
text, a label (the capital, the field, the stereotyped gender, the number, the tense)
and, where pairs must stay minimal, a group: number agreement only pairs `key` with
`keys`, temporal consistency only `Last year` with `Next year`, so that nothing but the
concept changes. The notebook's own pairs are not here (the experiment files keep them
verbatim as reference pairs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    text: str
    answers: dict[str, str] | None = None  # label -> answer; None: " " + label

    def answer(self, label: str) -> str | None:
        if self.answers is None:
            return " " + label
        return self.answers.get(label)

    def fill(self, slot: str) -> tuple[str, str]:
        """The prompt, and the slot's text as it appears in it."""
        if "{X}" in self.text:
            slot = slot[:1].upper() + slot[1:]
            return self.text.replace("{X}", slot), slot
        return self.text.replace("{x}", slot), slot


@dataclass(frozen=True)
class Item:
    text: str
    label: str
    group: str = ""


@dataclass(frozen=True)
class Concept:
    stem: str  # file name: experiments/data/<stem>.<model>.csv
    label: str  # the `concept` column, as in experiments/*.toml
    templates: tuple[Template, ...]
    items: tuple[Item, ...]
    within_group: bool = False  # pair only items of the same group


def _items(label_of: dict[str, list[str]], group: str = "") -> tuple[Item, ...]:
    return tuple(Item(t, label, group) for label, texts in label_of.items() for t in texts)


# --- landmarks: landmark -> city ------------------------------------------------------
LANDMARK_CITY = {
    "Paris": ["the Eiffel Tower", "the Louvre", "the Arc de Triomphe", "Notre Dame Cathedral",
              "the Champs-Élysées", "the Sacré-Cœur", "the Musée d'Orsay"],
    "Rome": ["the Colosseum", "the Pantheon", "the Trevi Fountain", "the Sistine Chapel",
             "the Roman Forum", "St. Peter's Basilica", "the Spanish Steps"],
    "London": ["Big Ben", "Buckingham Palace", "Westminster Abbey", "Tower Bridge",
               "Trafalgar Square", "the British Museum", "St Paul's Cathedral"],
    "Moscow": ["the Kremlin", "Red Square", "St. Basil's Cathedral", "the Bolshoi Theatre"],
    "Berlin": ["the Brandenburg Gate", "the Reichstag", "Checkpoint Charlie"],
    "Athens": ["the Acropolis", "the Parthenon"],
    "Barcelona": ["the Sagrada Familia", "Park Güell"],
    "Istanbul": ["the Hagia Sophia", "the Blue Mosque", "the Grand Bazaar", "Topkapi Palace"],
    "Beijing": ["the Forbidden City", "Tiananmen Square", "the Temple of Heaven"],
    "Sydney": ["Bondi Beach", "the Harbour Bridge"],
    "Dubai": ["the Burj Khalifa", "the Burj Al Arab"],
    "Amsterdam": ["the Rijksmuseum", "the Anne Frank House", "the Van Gogh Museum"],
    "Venice": ["St. Mark's Basilica", "the Rialto Bridge", "the Doge's Palace"],
    "Washington": ["the White House", "the Lincoln Memorial", "the Capitol Building"],
    "Jerusalem": ["the Western Wall", "the Dome of the Rock"],
    "Cairo": ["the Egyptian Museum", "Tahrir Square"],
    "Seattle": ["the Space Needle"],
    "Toronto": ["the CN Tower"],
    "Madrid": ["the Prado Museum", "the Plaza Mayor"],
    "Prague": ["the Charles Bridge", "the Old Town Square"],
    "Vienna": ["Schönbrunn Palace", "St. Stephen's Cathedral"],
    "Agra": ["the Taj Mahal"],
    "Pisa": ["the Leaning Tower"],
    "Rio": ["Christ the Redeemer", "Copacabana Beach", "Sugarloaf Mountain"],
}

LANDMARKS = Concept(
    stem="landmarks",
    label="landmarks",
    templates=(
        Template("{X} is in"),
        Template("{X} is located in the city of"),
        Template("{X} is a famous landmark in"),
        Template("Every year, millions of tourists visit {x} in"),
        Template("The city that is home to {x} is"),
        Template("To see {x}, you have to travel to"),
    ),
    items=_items(LANDMARK_CITY),
)

# --- country capitals: country -> capital ---------------------------------------------
CAPITAL_OF = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "England": "London",
    "Egypt": "Cairo", "Greece": "Athens", "Austria": "Vienna", "Hungary": "Budapest",
    "Poland": "Warsaw", "Ireland": "Dublin", "Portugal": "Lisbon", "Norway": "Oslo",
    "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Netherlands": "Amsterdam", "Belgium": "Brussels", "Iran": "Tehran", "Iraq": "Baghdad",
    "Syria": "Damascus", "Cuba": "Havana", "Peru": "Lima", "Chile": "Santiago",
    "Canada": "Ottawa", "Australia": "Canberra", "Korea": "Seoul", "Afghanistan": "Kabul",
    "Ukraine": "Kiev", "Thailand": "Bangkok", "Philippines": "Manila", "Kenya": "Nairobi",
    "Scotland": "Edinburgh", "Switzerland": "Bern", "Tunisia": "Tunis",
    "New Zealand": "Wellington", "Turkey": "Ankara", "Lebanon": "Beirut",
    "the Czech Republic": "Prague", "Indonesia": "Jakarta", "Vietnam": "Hanoi",
}

COUNTRY_CAPITALS = Concept(
    stem="country_capitals",
    label="country capitals",
    templates=(
        Template("The capital of {x} is"),
        Template("The capital city of {x} is"),
        Template("The government of {x} sits in its capital,"),
        Template("The largest airport serving the capital of {x} is near"),
        Template("If you fly to the capital of {x}, you land in"),
        Template("The capital of {x} is the city of"),
    ),
    items=tuple(Item(country, capital) for country, capital in CAPITAL_OF.items()),
)

# --- gender bias in occupation: occupation -> stereotyped pronoun ---------------------
OCCUPATIONS = {
    "female": ["nurse", "secretary", "receptionist", "housekeeper", "nanny", "maid",
               "hairdresser", "librarian", "dancer", "cashier", "babysitter", "stylist",
               "florist", "midwife", "homemaker", "cheerleader", "typist", "manicurist"],
    "male": ["mechanic", "engineer", "carpenter", "plumber", "electrician", "pilot",
             "soldier", "firefighter", "farmer", "surgeon", "janitor", "guard", "sheriff",
             "builder", "programmer", "banker", "boxer", "captain", "butcher", "miner"],
}
SHE_HE = {"female": " she", "male": " he"}
HER_HIS = {"female": " her", "male": " his"}

GENDER_BIAS = Concept(
    stem="gender_bias",
    label="gender bias in occupation",
    templates=(
        Template("The {x} said that", SHE_HE),
        Template("The {x} told the manager that", SHE_HE),
        Template("The {x} was late to work because", SHE_HE),
        Template("The {x} smiled because", SHE_HE),
        Template("The {x} picked up", HER_HIS),
        Template("After a long day, the {x} went home and called", HER_HIS),
    ),
    items=_items(OCCUPATIONS),
)

# --- Nobel Prize winners: laureate -> field -------------------------------------------
LAUREATES = {
    "Physics": ["Albert Einstein", "Niels Bohr", "Max Planck", "Richard Feynman",
                "Enrico Fermi", "Paul Dirac", "Werner Heisenberg", "Peter Higgs",
                "Max Born", "Wilhelm Röntgen", "Guglielmo Marconi", "Louis de Broglie"],
    "Chemistry": ["Frederick Sanger", "Dorothy Hodgkin", "Otto Hahn", "Fritz Haber",
                  "Ernest Rutherford", "Glenn Seaborg", "Harold Urey", "Jennifer Doudna",
                  "Svante Arrhenius", "Irving Langmuir"],
    "Literature": ["Ernest Hemingway", "John Steinbeck", "William Faulkner", "Toni Morrison",
                   "Bob Dylan", "Rudyard Kipling", "Samuel Beckett", "Albert Camus",
                   "Thomas Mann", "Pablo Neruda", "Kazuo Ishiguro", "Hermann Hesse",
                   "Winston Churchill", "Doris Lessing", "Alice Munro", "Boris Pasternak"],
    "Peace": ["Martin Luther King", "Nelson Mandela", "Barack Obama", "Mother Teresa",
              "Malala Yousafzai", "Jimmy Carter", "Desmond Tutu", "Kofi Annan", "Al Gore",
              "Mikhail Gorbachev", "Woodrow Wilson", "Elie Wiesel", "the Dalai Lama"],
    "Medicine": ["Alexander Fleming", "Robert Koch", "Ivan Pavlov", "Francis Crick",
                 "James Watson", "Frederick Banting", "Camillo Golgi"],
    "Economics": ["Paul Krugman", "Milton Friedman", "John Nash", "Joseph Stiglitz",
                  "Amartya Sen", "Daniel Kahneman", "Friedrich Hayek", "Paul Samuelson"],
}

NOBEL_PRIZE = Concept(
    stem="nobel_prize",
    label="nobel prize winners",
    templates=(
        Template("{X} won the Nobel Prize in"),
        Template("{X} was awarded the Nobel Prize in"),
        Template("{X} received the Nobel Prize in"),
        Template("The Nobel laureate {x} won the prize in"),
        Template("{X} is best known for winning the Nobel Prize in"),
        Template("In the history of the Nobel Prize, {x} is a laureate in"),
    ),
    items=_items(LAUREATES),
)

# --- number agreement: subject noun's number -> verb form -----------------------------
NOUNS = [  # (singular, plural)
    ("dog", "dogs"), ("cat", "cats"), ("boy", "boys"), ("girl", "girls"),
    ("teacher", "teachers"), ("student", "students"), ("doctor", "doctors"),
    ("farmer", "farmers"), ("player", "players"), ("singer", "singers"),
    ("soldier", "soldiers"), ("worker", "workers"), ("bird", "birds"), ("horse", "horses"),
    ("child", "children"), ("man", "men"), ("woman", "women"), ("neighbor", "neighbors"),
    ("friend", "friends"), ("officer", "officers"), ("manager", "managers"),
    ("author", "authors"), ("artist", "artists"), ("driver", "drivers"),
    ("customer", "customers"),
]
IS_ARE = {"singular": " is", "plural": " are"}
WAS_WERE = {"singular": " was", "plural": " were"}
HAS_HAVE = {"singular": " has", "plural": " have"}

NUMBER_AGREEMENT = Concept(
    stem="number_agreement",
    label="number agreement",
    templates=(
        Template("The {x} near the window", IS_ARE),
        Template("The {x} behind the old house", IS_ARE),
        Template("The {x} in the picture", IS_ARE),
        Template("The {x} that the teacher liked", WAS_WERE),
        Template("The {x} from the small town", WAS_WERE),
        Template("The {x} next to the tree", HAS_HAVE),
    ),
    items=tuple(
        item
        for singular, plural in NOUNS
        for item in (Item(singular, "singular", singular), Item(plural, "plural", singular))
    ),
    within_group=True,
)

# --- temporal consistency: time cue -> past form or future auxiliary ------------------
CUES = [  # (past, future), each a minimal pair
    ("Yesterday", "Tomorrow"), ("Last year", "Next year"), ("Last week", "Next week"),
    ("Last month", "Next month"), ("Last summer", "Next summer"),
    ("Last Monday", "Next Monday"), ("Last winter", "Next winter"),
    ("In the past", "In the future"), ("Earlier today", "Later today"),
    ("Earlier this year", "Later this year"), ("Two days ago", "In two days"),
    ("A year ago", "In a year"), ("Last night", "Tonight"), ("Last Friday", "Next Friday"),
    ("Last spring", "Next spring"), ("Last weekend", "Next weekend"),
    ("Earlier this week", "Later this week"), ("In 1990", "In 2050"),
]
PAST_SINGULAR = {"past": " was", "future": " will"}
PAST_PLURAL = {"past": " were", "future": " will"}

TEMPORAL_CONSISTENCY = Concept(
    stem="temporal_consistency",
    label="temporal consistency",
    templates=(
        Template("{x}, I", PAST_SINGULAR),
        Template("{x}, she", PAST_SINGULAR),
        Template("{x}, the weather", PAST_SINGULAR),
        Template("{x}, the company", PAST_SINGULAR),
        Template("{x}, we", PAST_PLURAL),
        Template("{x}, my parents", PAST_PLURAL),
        Template("{x}, the students", PAST_PLURAL),
        Template("{x}, our neighbors", PAST_PLURAL),
    ),
    items=tuple(
        item
        for past, future in CUES
        for item in (Item(past, "past", past), Item(future, "future", past))
    ),
    within_group=True,
)

CONCEPTS = (LANDMARKS, COUNTRY_CAPITALS, GENDER_BIAS, NOBEL_PRIZE, NUMBER_AGREEMENT,
            TEMPORAL_CONSISTENCY)
